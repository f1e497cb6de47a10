"""WSGI entry point for gunicorn: ``gunicorn -c config/gunicorn.conf.py wsgi:app``."""

from autoconfig import create_app

app = create_app()
