"""People signing in through an OpenID Connect provider (the domain side; the protocol is
in ``sandbox/oidc.py``).

The provider only vouches for who someone is; this platform decides who they are here. An
account at the provider (issuer, subject) is linked to a person at its first sign-in, and
only when the provider says the email is verified, the email is in a domain the operator
trusts this provider for, and a person with that email already exists. Nobody is created
and no role is granted from the provider's claims. Later sign-ins match the stored link
alone: an email changed at the provider neither breaks it nor moves it to someone else.

TOTP is not asked for: the provider runs its own second factor, and the operator chooses
a provider whose policy meets theirs (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from authz.context import Ctx
from authz.models import OidcIdentity, Party, Person
from authz.people import Issued, issue_token, normal_email
from compute.errors import Conflict, Unauthenticated

METHOD = "oidc"


@dataclass(frozen=True)
class Claims:
    """What a verified ID token says about the person (nothing else is used)."""

    issuer: str
    subject: str
    email: str | None
    email_verified: bool


def identify_oidc(ctx: Ctx, claims: Claims, email_domains: Collection[str]) -> Person:
    """The active person this provider account is, linking it on first sign-in.

    Used by API sign-in (:func:`sign_in_oidc`) and by pages that open their own session.
    Each refusal says what to do next; none of them writes anything.
    """
    link = ctx.session.scalar(select(OidcIdentity).where(
        OidcIdentity.issuer == claims.issuer, OidcIdentity.subject == claims.subject))
    if link is not None:
        person = ctx.session.get(Person, link.person_id)
        assert person is not None
    else:
        person = _first_sign_in(ctx, claims, email_domains)
    party = ctx.session.get(Party, person.party_id)
    if not person.active or party is None or not party.active:
        raise Unauthenticated("sign-in refused: this account is deactivated; ask the "
                              "operator")
    if link is None:
        ctx.session.add(OidcIdentity(issuer=claims.issuer, subject=claims.subject,
                                     person_id=person.id, linked_at=ctx.now()))
        try:
            ctx.session.flush()
        except IntegrityError:
            # The same account's first sign-in finished twice at once: one link stands.
            raise Conflict("this account was linked by a sign-in finishing at the same "
                           "time; sign in again") from None
        # The ledger names the provider, not the subject: an identifier at another
        # organisation is personal data the append-only ledger does not hold.
        ctx.record("person.oidc_linked", person.id, {"person_id": person.id,
                                                     "party_id": person.party_id,
                                                     "issuer": claims.issuer})
    return person


def _first_sign_in(ctx: Ctx, claims: Claims, email_domains: Collection[str]) -> Person:
    if not claims.email:
        raise Unauthenticated("sign-in refused: the identity provider sent no email; "
                              "allow this application the email scope at the provider")
    if claims.email_verified is not True:
        raise Unauthenticated("sign-in refused: the identity provider has not verified "
                              "your email; verify it there and sign in again")
    email = normal_email(claims.email)
    domain = email.rpartition("@")[2]
    if domain not in {d.lower() for d in email_domains}:
        raise Unauthenticated("sign-in refused: this identity provider is not trusted for "
                              "emails of your domain; sign in with your password, or ask "
                              "the operator")
    person = ctx.session.scalar(select(Person).where(func.lower(Person.email) == email))
    if person is None:
        raise Unauthenticated("sign-in refused: no person here has the email your identity "
                              "provider verified; ask your party's administrator to add you")
    other = ctx.session.scalar(select(OidcIdentity.id).where(
        OidcIdentity.issuer == claims.issuer, OidcIdentity.person_id == person.id))
    if other is not None:
        # Two accounts at one provider claiming the same email: the first link stands.
        raise Unauthenticated("sign-in refused: another account at this identity provider "
                              "is already linked to you; sign in with that one, or ask the "
                              "operator to remove the link")
    return person


def sign_in_oidc(ctx: Ctx, claims: Claims, email_domains: Collection[str],
                 token_days: int | None) -> tuple[Person, Issued]:
    """As password sign-in: a fresh personal API token (the previous one stops working)."""
    person = identify_oidc(ctx, claims, email_domains)
    issued = issue_token(ctx, person, token_days)
    ctx.record("person.signed_in", person.id, {"person_id": person.id,
                                               "party_id": person.party_id,
                                               "method": METHOD})
    return person, issued


def unlink_oidc(ctx: Ctx, actor: Party, person: Person) -> int:
    """The operator removes a person's provider links (an account lost or reassigned)."""
    links = list(ctx.session.scalars(select(OidcIdentity).where(
        OidcIdentity.person_id == person.id)))
    for link in links:
        ctx.session.delete(link)
    if links:
        ctx.record("person.oidc_unlinked", actor.id, {"person_id": person.id,
                                                      "party_id": person.party_id,
                                                      "links": len(links)})
    return len(links)
