"""nginx as the reference reverse proxy: one worker, upstream keep-alive, no buffering of streams.

The distribution's nginx is used as installed (``apt-get install nginx-light``); nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from bench.procs import HOST, Proc, which

CONF = """\
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 65536;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 16m;
    client_body_buffer_size 256k;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    upstream bench_upstream {{
        server {host}:{upstream_port};
        keepalive 2048;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen {host}:{port} backlog=8192;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def nginx_binary() -> str | None:
    return which("nginx")


def nginx_proc(binary: str, workdir: str, port: int, upstream_port: int, cpus: set[int] | None) -> Proc:
    folder = Path(workdir) / "nginx"
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(CONF.format(dir=folder, host=HOST, port=port, upstream_port=upstream_port))
    argv = [binary, "-p", str(folder), "-c", str(conf), "-e", str(folder / "error.log")]
    return Proc("nginx", argv, {}, cpus)
