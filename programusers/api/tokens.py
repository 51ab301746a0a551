"""The user token of every request (`x-authenticated-user-token`), verified here, not by a gateway in front:
RS256 only, keys from a folder of PEM public keys named by key id, `exp` required, `nbf` and (when set)
`iss` honoured. The caller's id is the last `:` part of `sub` (the platform's `f:<federation>:<user>`), its
roles those of the `roles` claim with the organisations each is scoped to.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = ["Caller", "InvalidToken", "TokenVerifier"]

ALGORITHM = "RS256"


class InvalidToken(Exception):
    """A missing, malformed, unsigned, wrongly signed or expired token; the message says which of those
    broad cases, never why a signature failed."""


@dataclass(frozen=True)
class Caller:
    """Who a verified token speaks for: `user_id`, and each role with the organisations it is scoped to."""
    user_id: str
    roles: tuple[tuple[str, frozenset[str]], ...]

    def has_role(self, roles: Iterable[str], organisation: str) -> bool:
        """Whether one of `roles` is scoped to `organisation` (a role counts in its scopes only)."""
        wanted = set(roles)
        return any(role in wanted and organisation in scope for role, scope in self.roles)


def _roles(claim) -> tuple[tuple[str, frozenset[str]], ...]:
    """The `roles` claim, `[{"role": R, "scope": [{"organisationId": O}, ...]}, ...]`; shapes other than that
    grant nothing."""
    found = []
    for entry in claim if isinstance(claim, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("role"), str) and isinstance(entry.get("scope"), list):
            scope = frozenset(item["organisationId"] for item in entry["scope"]
                              if isinstance(item, dict) and isinstance(item.get("organisationId"), str))
            found.append((entry["role"], scope))
    return tuple(found)


class TokenVerifier:
    """Verifies user tokens against the RSA public keys in `keys_dir` (`<key id>.pem` each).

    Args:
      keys_dir: the folder of PEM public keys, named by key id (as the platform keeps Keycloak's).
      issuer: when given, a token's `iss` must equal it.
    """

    def __init__(self, keys_dir: str | Path, issuer: str | None = None):
        self.issuer = issuer
        self._keys: dict[str, RSAPublicKey] = {}
        for path in sorted(Path(keys_dir).glob("*.pem")):
            key = load_pem_public_key(path.read_bytes())
            if not isinstance(key, RSAPublicKey):
                raise ValueError(f"{path.name} is not an RSA public key")
            self._keys[path.stem] = key
        if not self._keys:
            raise ValueError(f"no PEM public key in {keys_dir}")

    def verify(self, token: str | None) -> Caller:
        if not token:
            raise InvalidToken("the user token is missing")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the user token is malformed") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken("the user token is not signed with RS256")
        kid = header.get("kid")
        if kid is not None and kid not in self._keys:
            raise InvalidToken("the user token is signed with an unknown key")
        for key in [self._keys[kid]] if kid is not None else self._keys.values():
            try:
                claims = jwt.decode(token, key, algorithms=[ALGORITHM], issuer=self.issuer,
                                    options={"require": ["exp", "sub"], "verify_aud": False})
            except jwt.ExpiredSignatureError:
                raise InvalidToken("the user token has expired") from None
            except jwt.ImmatureSignatureError:
                raise InvalidToken("the user token is not valid yet") from None
            except jwt.InvalidSignatureError:
                continue
            except jwt.InvalidTokenError:
                raise InvalidToken("the user token is invalid") from None
            user_id = str(claims["sub"]).rsplit(":", 1)[-1]
            if not user_id:
                raise InvalidToken("the user token names no user")
            return Caller(user_id, _roles(claims.get("roles")))
        raise InvalidToken("the user token's signature does not verify")
