"""gunicorn settings for autoconfig: ``gunicorn -c config/gunicorn.conf.py wsgi:app`` in a clone,
``gunicorn -c /etc/autoconfig/gunicorn.conf.py 'autoconfig:create_app()'`` from the installed
package (config/autoconfig.service).

Environment: AUTOCONFIG_BIND (default 127.0.0.1:8080), AUTOCONFIG_WORKERS
(default 2 per core + 1), AUTOCONFIG_WORKER_CLASS (default sync) and, for
gthread only, AUTOCONFIG_THREADS (default 4).

Why sync: every request is a few hundred microseconds of CPU with no slow
wait (the store answers in well under a millisecond), which is the case
gunicorn's sync worker is made for.  Measured with bench/ on 2 cores at 32
connections, sync workers answered with a p99 of about 11 ms where gthread
workers took about 30 ms for the same app: the GIL and the thread pool's
queue put the tail behind whichever connection a worker happened to hold.
Sync workers need a buffering proxy in front (config/nginx/autoconfig.conf),
so a slow client ties up nginx and not a worker.  Choose gthread when
gunicorn faces clients directly, or when hosted-domain detection ([dns]
mx_hosts) makes a request wait for DNS: a thread waits, the worker answers on.
"""

import multiprocessing
import os
import shutil
import tempfile

bind = os.environ.get("AUTOCONFIG_BIND", "127.0.0.1:8080").split(",")
workers = int(os.environ.get("AUTOCONFIG_WORKERS", multiprocessing.cpu_count() * 2 + 1))
worker_class = os.environ.get("AUTOCONFIG_WORKER_CLASS", "sync")
threads = int(os.environ.get("AUTOCONFIG_THREADS", "4")) if worker_class == "gthread" else 1
timeout = 30
graceful_timeout = 10
keepalive = 5

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


def on_starting(server):
    """Start from zero: files left by an earlier run would be added in."""
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            os.unlink(os.path.join(directory, name))


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
