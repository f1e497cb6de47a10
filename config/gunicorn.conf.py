"""gunicorn settings for autoconfig: ``gunicorn -c config/gunicorn.conf.py wsgi:app`` in a clone,
``gunicorn -c /etc/autoconfig/gunicorn.conf.py 'autoconfig:create_app()'`` from the installed
package (config/autoconfig.service).

Environment: AUTOCONFIG_BIND (default 127.0.0.1:8080), AUTOCONFIG_WORKERS
(default 2 per core + 1), AUTOCONFIG_READ_TIMEOUT (default 5 seconds),
AUTOCONFIG_WORKER_CLASS (default buffering), AUTOCONFIG_EXPRESS_LANE (on or off,
default on: the buffering worker answers Dovecot's questions without Flask) and, for gthread only,
AUTOCONFIG_THREADS (default 4).

Why the buffering worker (autoconfig/worker.py): every request is a few
hundred microseconds of CPU with no slow wait (the store answers in well
under a millisecond), which is the case gunicorn's sync worker is made for.
Measured with bench/ on 2 cores at 32 connections, sync workers answered
with a p99 of about 11 ms where gthread workers took about 30 ms for the
same app: the GIL and the thread pool's queue put the tail behind whichever
connection a worker happened to hold.  But a sync worker waits for its
client: a few clients that send half a request and stop held every worker
for 30 s.  The buffering worker is the sync worker fed only complete
requests: each worker reads arriving requests in an event loop and answers
408 to one not complete AUTOCONFIG_READ_TIMEOUT seconds after it connected,
so a slow client holds a buffer, never a worker.  An answered connection goes back into that
loop until its next request (keep-alive, ``keepalive`` below): Dovecot asks about every IMAP and
POP3 login on the connection it keeps, instead of a new TCP connection per login.  Production still puts
nginx in front (config/nginx/autoconfig.conf) for TLS.  ``sync`` and
``gthread`` remain selectable; neither has a read deadline, so use them
only behind a buffering proxy.  gthread suits hosted-domain detection
([dns] mx_hosts), where a request may wait for DNS: a thread waits, the
worker answers on.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("AUTOCONFIG_BIND", "127.0.0.1:8080").split(",")
workers = int(os.environ.get("AUTOCONFIG_WORKERS", multiprocessing.cpu_count() * 2 + 1))
_WORKER_CLASSES = {"buffering": "autoconfig.worker.BufferingWorker"}
worker_class = os.environ.get("AUTOCONFIG_WORKER_CLASS", "buffering")
worker_class = _WORKER_CLASSES.get(worker_class, worker_class)
threads = int(os.environ.get("AUTOCONFIG_THREADS", "4")) if worker_class == "gthread" else 1
# A request must have arrived in full this many seconds after its connection was accepted.
# Only the buffering worker reads it; imported only then, so another app (the benchmark's
# peer, in a virtualenv without this package's dependencies) can run under these settings.
_read_timeout = None
# Dovecot's questions answered without Flask (autoconfig/web/express.py); "off" sends them down the full path.
_express_lane = True
if worker_class == _WORKER_CLASSES["buffering"]:
    from autoconfig.worker import express_lane, read_timeout

    _read_timeout = read_timeout(os.environ.get("AUTOCONFIG_READ_TIMEOUT"))
    _express_lane = express_lane(os.environ.get("AUTOCONFIG_EXPRESS_LANE"))
timeout = 30
graceful_timeout = 10
# How long the buffering worker keeps an answered connection open for its next request (an idle
# connection costs a buffer in the worker's event loop, never the worker; at most
# autoconfig.worker.MAX_IDLE per worker).  Dovecot's HTTP client keeps its connection to the
# policy endpoint idle for up to 10 s (max_idle_time in 2.3's auth-policy.c, hard-coded;
# http_client_max_idle_time = 10s in 2.4's auth_policy filter) and does not retry a request lost
# with its connection: had the service closed first, a question crossing the close would fail,
# and with auth_policy_reject_on_fail = no the login would go in unasked.  So the service waits
# longer than Dovecot, and Dovecot is the one that closes.  nginx's upstream keepalive_timeout
# (config/nginx/autoconfig.conf) is shorter than this for the same reason.
keepalive = 15

# Clients send small requests; anything bigger is hostile or broken.  The app
# answers oversized query strings itself (414, with the headers every answer
# carries: Cache-Control, and the CSP on HTML pages), so gunicorn's request
# line limit sits at its maximum, above anything the app refuses: gunicorn's
# own answer is a bare HTML page.  Only lines over 8190 bytes still get it
# (behind nginx, nginx's 414 comes first, at 8 KiB).
limit_request_line = 8190
limit_request_fields = 50
limit_request_field_size = 8190

# Access log without headers: Outlook sends Basic credentials to autodiscover,
# and no Authorization value may ever reach a log.  %(r)s is the request line.
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(B)s %(M)sms "%(a)s"'

# gunicorn's runtime control socket defaults to one path per user
# ($HOME/.gunicorn/gunicorn.ctl), which several instances on one host (nodes,
# tests) would fight over.  Off unless AUTOCONFIG_CONTROL_SOCKET names a path.
control_socket = os.environ.get("AUTOCONFIG_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# Prometheus metrics summed over all workers: each worker writes its values
# into files in this directory and /metrics adds them up.  A fresh directory
# per server start, unless PROMETHEUS_MULTIPROC_DIR names one.
_own_metrics_dir = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if _own_metrics_dir:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="autoconfig-metrics-")


# Which SQLite file this node serves, recorded by its first worker to open it, so a
# worker started after the file was deleted or replaced refuses the new one (503)
# like the others instead of serving it (autoconfig/store/sqlite.py).  A fresh
# directory per master start: restarting the node adopts the file now at the path.
_own_node_dir = "AUTOCONFIG_NODE_DIR" not in os.environ
if _own_node_dir:
    os.environ["AUTOCONFIG_NODE_DIR"] = tempfile.mkdtemp(prefix="autoconfig-node-")


def on_starting(server):
    """Start from zero: files left by an earlier run would be added in."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


def post_fork(server, worker):
    """The read deadline and the express lane for this worker (only the buffering worker has them)."""
    if _read_timeout is not None:
        worker.read_timeout = _read_timeout
        worker.express = _express_lane


def worker_exit(server, worker):
    """In the leaving worker: close its store (every connection of every thread) before the interpreter exits.

    Otherwise the connections would be closed by the collector at exit, in no
    chosen order (Python 3.13 warns about each SQLite one), and a PostgreSQL
    server would see the sockets drop instead of a goodbye.  gunicorn also
    calls this in the master for a worker that vanished; that copy never
    loaded the app.
    """
    app = getattr(worker, "wsgi", None)
    service = getattr(app, "extensions", {}).get("autoconfig")
    if service is not None:
        service.store.close()


def child_exit(server, worker):
    """A replaced worker's live values (gauges) must not linger; its counters stay counted."""
    try:
        from prometheus_client import multiprocess
    except ImportError:  # another app under these settings (bench/ runs a peer with them)
        return
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
    if _own_node_dir:
        shutil.rmtree(os.environ["AUTOCONFIG_NODE_DIR"], ignore_errors=True)
