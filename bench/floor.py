"""The framework floor: a minimal Flask app that returns fixed bytes.

The benchmark serves, for each client format, exactly the bytes our service
returned for the same request, under the same gunicorn settings.  What our
service costs above this is the price of our own work per request.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask, Response


def create_app() -> Flask:
    """Answers from ``$BENCH_FLOOR_DIR/answers.json``: path -> [status, content type, body file]."""
    directory = Path(os.environ["BENCH_FLOOR_DIR"])
    answers = {
        path: (status, content_type, (directory / body).read_bytes())
        for path, (status, content_type, body) in json.loads((directory / "answers.json").read_text()).items()
    }
    app = Flask(__name__)

    def answer(path: str) -> Response:
        status, content_type, body = answers["/" + path.lower()]
        return Response(body, status=status, content_type=content_type)

    app.add_url_rule("/<path:path>", view_func=answer, methods=["GET", "POST"])
    return app
