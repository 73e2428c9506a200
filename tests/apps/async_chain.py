"""Concurrency fidelity app for Python asyncio: every request's outgoing calls carry its id.

  python3 async_chain.py --framework aiohttp|fastapi [--uvloop] --port 8001 \\
      --downstream http://127.0.0.1:8002 --pg-port 5432 --redis-port 6379

GET /chain/<id> makes, one after the other (each after an `await` on the previous one):
  GET <downstream>/item/<id> with a shared aiohttp ClientSession,
  GET <downstream>/item/<id> with a shared httpx.AsyncClient,
  SELECT name FROM items WHERE id = <id>   (asyncpg pool; the id is a literal in the text),
  GET chain:<id> on Redis (redis.asyncio; Redis spans carry the command only),
then answers 200. aiohttp serves with its own server, fastapi with uvicorn. Prints
"ready <port>" once listening.
"""
import argparse
import asyncio

import aiohttp
import asyncpg
import httpx
import redis.asyncio as aioredis

parser = argparse.ArgumentParser()
parser.add_argument("--framework", choices=["aiohttp", "fastapi"], required=True)
parser.add_argument("--uvloop", action="store_true")
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--downstream", required=True)
parser.add_argument("--pg-port", type=int, required=True)
parser.add_argument("--redis-port", type=int, required=True)
args = parser.parse_args()


class Clients:
    """Shared by every request, as a real service shares its pools."""

    async def open(self):
        self.session = aiohttp.ClientSession()
        self.httpx = httpx.AsyncClient()
        self.pg = await asyncpg.create_pool(host="127.0.0.1", port=args.pg_port, user="postgres", database="shop", min_size=2, max_size=8)
        self.redis = aioredis.Redis(host="127.0.0.1", port=args.redis_port)

    async def chain(self, ident: int) -> str:
        async with self.session.get(f"{args.downstream}/item/{ident}") as r:
            await r.read()
            first = r.status
        second = (await self.httpx.get(f"{args.downstream}/item/{ident}")).status_code
        rows = await self.pg.fetch(f"SELECT name FROM items WHERE id = {ident}")
        await self.redis.get(f"chain:{ident}")
        return f"chain {ident}: {first} {second}, {len(rows)} row(s)\n"


clients = Clients()


def serve_aiohttp():
    from aiohttp import web

    async def chain(request):
        return web.Response(text=await clients.chain(int(request.match_info["id"])))

    async def main():
        await clients.open()
        app = web.Application()
        app.router.add_get("/chain/{id}", chain)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=128).start()
        print(f"ready {args.port}", flush=True)
        await asyncio.Event().wait()

    run(main())


def serve_fastapi():
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse

    app = FastAPI()

    @app.get("/chain/{ident}", response_class=PlainTextResponse)
    async def chain(ident: int):
        return await clients.chain(ident)

    async def main():
        await clients.open()
        config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="none", backlog=128)
        server = uvicorn.Server(config)
        serving = asyncio.ensure_future(server.serve())
        while not server.started:
            await asyncio.sleep(0.05)
        print(f"ready {args.port}", flush=True)
        await serving

    run(main())


def run(main):
    if args.uvloop:
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


if args.framework == "aiohttp":
    serve_aiohttp()
else:
    serve_fastapi()
