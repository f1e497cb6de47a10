"""gunicorn entry for the floor app: ``gunicorn -c config/gunicorn.conf.py bench.floor_wsgi:app``."""

from bench.floor import create_app

app = create_app()
