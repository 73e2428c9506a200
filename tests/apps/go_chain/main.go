// Concurrency fidelity app for Go (goroutines): every request's outgoing calls carry its id.
//
//	go_chain -port 8001 -downstream http://127.0.0.1:8002 -pg-port 5432 -redis-port 6379
//
// GET /chain/<id> makes, one after the other:
//
//	GET <downstream>/item/<id> with net/http's default client (keep-alive; the request is
//	written by the connection's writeLoop goroutine, not the handler's),
//	SELECT name FROM items WHERE id = <id>   (database/sql with lib/pq; the id is a literal),
//	GET chain:<id> on Redis (gopkg.in/redis.v5; Redis spans carry the command only),
//
// then answers 200. Prints "ready <port>" once listening. Built in GOPATH mode against
// Debian's packaged libraries (golang-github-lib-pq-dev, golang-gopkg-redis.v5-dev).
package main

import (
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	_ "github.com/lib/pq"
	redis "gopkg.in/redis.v5"
)

func main() {
	port := flag.Int("port", 0, "port to serve on")
	downstream := flag.String("downstream", "", "base URL of the service to call")
	pgPort := flag.Int("pg-port", 0, "PostgreSQL port")
	redisPort := flag.Int("redis-port", 0, "Redis port")
	flag.Parse()

	db, err := sql.Open("postgres", fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=shop sslmode=disable", *pgPort))
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(16)
	db.SetMaxIdleConns(16)
	cache := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", *redisPort), PoolSize: 16})
	http.DefaultTransport.(*http.Transport).MaxIdleConnsPerHost = 64

	http.HandleFunc("/chain/", func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/chain/"))
		if err != nil {
			http.Error(w, "bad id", http.StatusBadRequest)
			return
		}
		resp, err := http.Get(fmt.Sprintf("%s/item/%d", *downstream, id))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		var name string
		if err := db.QueryRow(fmt.Sprintf("SELECT name FROM items WHERE id = %d", id)).Scan(&name); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		cache.Get(fmt.Sprintf("chain:%d", id))
		fmt.Fprintf(w, "chain %d: %d %s\n", id, resp.StatusCode, name)
	})
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		panic(err)
	}
	fmt.Printf("ready %d\n", *port)
	http.Serve(listener, nil)
}
