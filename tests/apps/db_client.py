"""Database and cache clients for zerotrace's integration tests, with the usual Python drivers.

  python3 db_client.py postgres PORT    psycopg2: a parameterised SELECT and an INSERT
  python3 db_client.py redis PORT       redis-py: SET/GET, a MULTI/EXEC pipeline, a WRONGTYPE error
  python3 db_client.py memcached PORT   pymemcache: set, get, a miss, delete, incr
  python3 db_client.py mysql PORT       PyMySQL queries, select_db, an error; mysql-connector
                                        server-side prepared statements

Prints one line per step; exits non-zero if a driver call fails unexpectedly.
"""
import sys

kind, port = sys.argv[1], int(sys.argv[2])

if kind == "postgres":
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="shop")
    cur = conn.cursor()
    cur.execute("SELECT name FROM items WHERE id = %s AND secret <> %s", (1, "topsecret"))
    print("row", cur.fetchone())
    cur.execute("INSERT INTO items (id, name, secret) VALUES (%s, %s, %s)", (3, "plum", "topsecret"))
    conn.commit()
    conn.close()
elif kind == "redis":
    import redis

    r = redis.Redis(host="127.0.0.1", port=port)
    r.set("user:secretkey", "secretvalue")
    print("get", r.get("user:secretkey"))
    pipe = r.pipeline(transaction=True)
    pipe.incr("counter")
    pipe.incr("counter")
    print("exec", pipe.execute())
    try:
        r.lpush("user:secretkey", "x")
    except redis.ResponseError as e:
        print("error", e)
elif kind == "memcached":
    from pymemcache.client.base import Client

    c = Client(("127.0.0.1", port))
    c.set("session:secretkey", b"secretvalue")
    print("get", c.get("session:secretkey"))
    print("miss", c.get("nothing-here"))
    c.delete("session:secretkey", noreply=False)
    print("incr", c.incr("missing-counter", 1, noreply=False))
elif kind == "mysql":
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=port, user="root", database="shop", autocommit=True)
    cur = conn.cursor()
    cur.execute("SELECT name FROM items WHERE secret = %s", ("topsecret",))
    print("rows", cur.fetchall())
    conn.select_db("shop")
    try:
        cur.execute("SELEC broken")
    except pymysql.err.ProgrammingError as e:
        print("error", e)
    conn.close()
    import mysql.connector

    conn = mysql.connector.connect(host="127.0.0.1", port=port, user="root", database="shop", use_pure=True)
    cur = conn.cursor(prepared=True)
    for i in (1, 2):
        cur.execute("SELECT name FROM items WHERE id = %s", (i,))
        print("prepared", cur.fetchall())
    conn.close()
else:
    sys.exit(f"unknown client kind {kind}")
