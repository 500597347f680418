"""Creating the first operator, from the controller host (the CLI), not over HTTP."""

from __future__ import annotations

from flask import Flask

from authz.context import Ctx
from authz.parties import Issued, create_party


def create_first_admin(app: Flask, name: str) -> Issued:
    ext = app.extensions["sandbox"]
    with ext["sessions"]() as session:
        ctx = Ctx(session, ext["log"], app.config["AUTHORIZING_SYSTEM"])
        issued = create_party(ctx, "system:cli", name, "admin", None)
        session.commit()
    return issued
