"""Creating the first operator, from the controller host (the CLI), not over HTTP."""

from __future__ import annotations

from flask import Flask

from authz.context import Ctx
from authz.parties import create_party
from authz.tokens import Issued
from sandbox import db


def create_first_admin(app: Flask, name: str) -> Issued:
    svc = db.services(app)
    with svc.sessions() as session:
        ctx = Ctx(session, svc.log, app.config["AUTHORIZING_SYSTEM"])
        issued = create_party(ctx, "system:cli", name, "admin", None)
        session.commit()
    return issued
