"""ccproxy's own app under another uvicorn event loop / HTTP parser, for the server decision record.

``python -m bench.variant --loop asyncio --http h11 --port P`` (same env as ``ccproxy serve``).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--http", choices=["httptools", "h11"], default="httptools")
    args = parser.parse_args(argv)

    import uvicorn

    from ccproxy.app import create_app
    from ccproxy.config import load_config
    from ccproxy.logs import configure

    config = load_config(cli={"server.port": args.port})
    configure(config.settings.logging.level, config.settings.logging.format)
    uvicorn.run(
        create_app(config),
        host="127.0.0.1",
        port=args.port,
        loop=args.loop,
        http=args.http,
        ws="none",
        lifespan="on",
        access_log=False,
        log_config=None,
        log_level="warning",
        server_header=False,
    )


if __name__ == "__main__":
    main()
