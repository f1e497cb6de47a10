"""The framework floor: a minimal Flask app that returns fixed bytes.

The benchmark serves, for each client format, exactly the answer our service
gave to the same request: the same status, the same headers and the same
body, under the same gunicorn settings.  Like any handler of a POST, it reads
the request body it was sent (gunicorn's reading of it is framework work, not
ours).  What our service costs above this is the price of our own work per
request: parsing the address, reading the switches and rendering the answer.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask, Response, request


def create_app() -> Flask:
    """Answers from ``$BENCH_FLOOR_DIR/answers.json``: path -> [status, headers, body file]."""
    directory = Path(os.environ["BENCH_FLOOR_DIR"])
    answers = {
        path: (status, [tuple(header) for header in headers], (directory / body).read_bytes())
        for path, (status, headers, body) in json.loads((directory / "answers.json").read_text()).items()
    }
    app = Flask(__name__)

    def answer(path: str) -> Response:
        request.get_data()
        status, headers, body = answers["/" + path.lower()]
        return Response(body, status=status, headers=headers)

    app.add_url_rule("/<path:path>", view_func=answer, methods=["GET", "POST"])
    return app
