"""Every detail an API can give a person is shown in French by the dashboard
(services/dashboard/api/french.py): the English strings the APIs pass to their problem
exceptions are read from the source itself (``ast``), so that an API that gains an English
detail without a French translation fails here, not in front of a maire."""

from __future__ import annotations

import ast
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

import httpx
import jwt
import pytest

from services.dashboard.api import french
from services.dashboard.api.client import problem_of
from services.ingest.stations.service import STATION_RENEW
from shared.access import PersonRecord, missing_role, withheld_roles
from shared.auth import PERSON_RENEW, ClaimNames, Principal, Role, _refused_token
from shared.clips import declared_content_type
from shared.errors import UnsupportedMediaType

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted([*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")])
SAMPLE = "42"  # what an f-string's {value} becomes: a pattern must take any value
# Where the detail sits among a call's arguments: the problem exceptions take it first,
# problem_response third.
DETAIL_AT = {"problem_response": 2}


def _refusals(collected: Collector) -> list[str]:
    """Every way shared/access.py words a refusal of a role, by calling it."""
    organisation = uuid.UUID("8c3e0e7e-1f0a-4e8b-9a55-2d3f1b7c9e10")
    agent = uuid.UUID("3f6d1f0e-2a4b-4c8d-9e0f-1a2b3c4d5e6f")
    people = [
        None,
        PersonRecord(agent, active=False, roles=frozenset(), habilitation_active=False),
        PersonRecord(agent, active=True, roles=frozenset({"agent"}), habilitation_active=False),
        PersonRecord(agent, active=True, roles=frozenset(Role), habilitation_active=True),
    ]
    asked = [(Role.responsable,), (Role.habilite,), (Role.agent,),
             (Role.maire, Role.responsable, Role.dpo), (Role.prefecture,)]  # fmt: skip
    # The reason get_principal gives for a token naming no organisation.
    unplaced = [d.sample for d in collected.assigned("shared/access.py", "reason")]
    said = [*(u for u in unplaced if u)]
    principals = [
        Principal("p", frozenset({Role.agent}), organisation),
        Principal("p", frozenset(), None, withheld={Role.responsable: unplaced[0] or ""}),
    ]
    for person in people:
        withheld = withheld_roles(frozenset(Role), person, organisation, "resp-1")
        roles = frozenset(Role) - withheld.keys()
        principals.append(Principal("resp-1", roles, organisation, withheld=withheld))
    for principal in principals:
        said += [missing_role(principal, r, ClaimNames()) for r in asked if not principal.has(*r)]
    return said


def _token_refusals(_: Collector) -> list[str]:
    errors = [
        *(kind("x") for kind in (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError,
                                 jwt.InvalidAudienceError, jwt.InvalidIssuerError,
                                 jwt.InvalidAlgorithmError, jwt.InvalidSignatureError,
                                 jwt.DecodeError, jwt.InvalidTokenError)),
        jwt.MissingRequiredClaimError("exp"),
    ]  # fmt: skip
    return [
        _refused_token(error, kind=kind, audience="vault", issuer="https://idp", renew=renew)
        for error in errors
        for kind, renew in (("token", PERSON_RENEW), ("station token", STATION_RENEW))
    ]


def _media_types(_: Collector) -> list[str]:
    said = []
    for value in ("text/html", "not a type at all"):
        with pytest.raises(UnsupportedMediaType) as refused:
            declared_content_type(value, field="header.upload-metadata.filetype")
        said += [refused.value.detail, *(e["message"] for e in refused.value.extensions["errors"])]
    return said


# Details made by a function, not written at the raise: each with what yields them (by calling
# the code, or reading the exceptions it words them with). A new site of this kind fails the
# test until it is listed here.
Made = Callable[["Collector"], list[str]]
MADE_BY: dict[tuple[str, str], Made] = {
    ("shared/access.py", "missing_role(principal, roles, verifier.claims)"): _refusals,
    (
        "shared/auth.py",
        "_refused_token(exc, kind=kind, audience=audience, issuer=issuer, renew=renew)",
    ): _token_refusals,
    ("shared/clips.py", "str(exc)"): _media_types,
    ("shared/clips.py", "f'{field}: {exc}'"): _media_types,
    # A damaged sealed object (shared/sealing.py's words), and a witness's malformed
    # cosignature (shared/notes.py's).
    ("services/vault/recordings/reading.py", "str(exc)"): lambda c: c.raised("SealError"),
    ("services/vault/audit/service.py", "str(exc)"): lambda c: c.raised("NoteError"),
    # Starlette's own: a path or a method no route has.
    ("shared/errors.py", "str(exc.detail)"): lambda c: [
        HTTPStatus.NOT_FOUND.phrase,
        HTTPStatus.METHOD_NOT_ALLOWED.phrase,
    ],
    # The problem exceptions' own details, checked above where they are raised.
    ("shared/errors.py", "exc.detail"): lambda c: [],
    # The vault's refusal, passed on to a station d'accueil as the vault worded it.
    ("services/ingest/uploads/service.py", "response"): lambda c: [],
}


@dataclass(frozen=True)
class Detail:
    """A detail as a person could read it: an f-string's values as SAMPLE (a module's constant
    as written)."""

    where: str
    node: ast.expr
    sample: str


def _text(node: ast.expr, constants: dict[str, ast.expr] | None = None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
                continue
            value = part.value if isinstance(part, ast.FormattedValue) else None
            named = (constants or {}).get(value.id) if isinstance(value, ast.Name) else None
            known = _text(named, constants) if named is not None else None
            parts.append(known if known is not None else SAMPLE)
        return "".join(parts)
    return None


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _problem_classes(trees: dict[str, ast.Module]) -> set[str]:
    """shared/errors.py's classes and their subclasses anywhere."""
    names = {"TemoinError"}
    grew = True
    while grew:
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in names:
                    bases = {
                        b.id if isinstance(b, ast.Name) else getattr(b, "attr", "")
                        for b in node.bases
                    }
                    if bases & names:
                        names.add(node.name)
                        grew = True
    return names


def _parents(tree: ast.Module) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _function_of(
    node: ast.AST, parents: dict[ast.AST, ast.AST]
) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            return node
    return None


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    constants: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if isinstance(target, ast.Name):
                constants[target.id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
            constants[node.target.id] = node.value
    return constants


def _argument(call: ast.Call, position: int, keyword: str | None) -> ast.expr | None:
    if keyword is not None:
        for given in call.keywords:
            if given.arg == keyword:
                return given.value
    return call.args[position] if len(call.args) > position else None


class Collector:
    def __init__(self) -> None:
        self.trees = {str(p.relative_to(ROOT)): ast.parse(p.read_text()) for p in SOURCES}
        self.parents = {where: _parents(tree) for where, tree in self.trees.items()}
        self.constants = {where: _module_constants(tree) for where, tree in self.trees.items()}
        # A constant imported from another module of the tree is that module's.
        for where, tree in self.trees.items():
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and node.module:
                    source = self.constants.get(node.module.replace(".", "/") + ".py", {})
                    for alias in node.names:
                        if alias.name in source:
                            self.constants[where][alias.asname or alias.name] = source[alias.name]
        self.classes = _problem_classes(self.trees)
        self.details: list[Detail] = []
        self.made: set[tuple[str, str]] = set()
        self._relayed: set[tuple[str, int]] = set()

    def run(self) -> None:
        for where, tree in self.trees.items():
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = _name(node)
                if name in self.classes or name in DETAIL_AT:
                    argument = _argument(node, DETAIL_AT.get(name or "", 0), "detail")
                    if argument is not None:
                        self._take(where, argument)
                    self._messages(where, node)
        self.produced = [text for make in MADE_BY.values() for text in make(self)]

    def assigned(self, where: str, name: str) -> list[Detail]:
        """The strings assigned to ``name`` in a module."""
        return [
            Detail(where, node.value, text)
            for node in ast.walk(self.trees[where])
            if isinstance(node, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
            for text in [_text(node.value, self.constants[where])]
            if text is not None
        ]

    def raised(self, exception: str) -> list[str]:
        """The literal messages of every ``exception(...)`` in the tree (f-strings' values as
        SAMPLE)."""
        return [
            text
            for tree in self.trees.values()
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _name(node) == exception and node.args
            for text in [_text(node.args[0])]
            if text is not None
        ]

    def _messages(self, where: str, call: ast.Call) -> None:
        """The ``message`` of each literal ``errors=[{"field": …, "message": …}]``."""
        errors = _argument(call, 99, "errors")
        if isinstance(errors, ast.List):
            for item in errors.elts:
                if isinstance(item, ast.Dict):
                    for key, value in zip(item.keys, item.values, strict=True):
                        if isinstance(key, ast.Constant) and key.value == "message":
                            self._take(where, value)

    def _take(self, where: str, node: ast.expr) -> None:
        text = _text(node, self.constants[where])
        # An f-string of values only (« {field}: {exc} ») is made by them, not written.
        if text is not None and any(c.isalpha() for c in text.replace(SAMPLE, "")):
            self.details.append(Detail(where, node, text))
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            self._take(where, node.left)
            self._take(where, node.right)
            return
        if isinstance(node, ast.Name):
            function = _function_of(node, self.parents[where])
            if function is not None:
                parameters = [a.arg for a in function.args.args]
                if node.id in parameters:
                    self._relay(function.name, parameters.index(node.id), node.id)
                    return
            constant = self.constants[where].get(node.id)
            if constant is not None:
                self._take(where, constant)
                return
        self.made.add((where, ast.unparse(node)))

    def _relay(self, function: str, position: int, keyword: str) -> None:
        """A detail passed in by the function's callers: the values they pass."""
        if (function, position) in self._relayed:
            return
        self._relayed.add((function, position))
        for where, tree in self.trees.items():
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and _name(node) == function:
                    argument = _argument(node, position, keyword)
                    if argument is not None:
                        self._take(where, argument)


@pytest.fixture(scope="module")
def collected() -> Collector:
    collector = Collector()
    collector.run()
    return collector


def test_the_collector_finds_the_apis_details(collected: Collector) -> None:
    samples = {d.sample for d in collected.details}
    # A few known ones, each of another kind: a literal, an f-string, a module constant, one
    # passed through a helper, one made by a function, an errors[] message.
    for known in (
        "this procedure is closed",
        "until must be after since",
        f"matricule {SAMPLE} already exists",
        "assertion already used (replay): sign a new one, with a fresh nonce",
        "no such camera in the station's organisation",
        "matricule or subject already in use",
        "the vault cannot be used now: keep the clip and retry later",
        "text may not contain NUL or a lone UTF-16 surrogate",
        f"{SAMPLE}: text may not contain NUL or a lone UTF-16 surrogate",
        f"Invalid value for: {SAMPLE}",
    ):
        assert known in samples, known
    assert len(samples) > 150
    produced = set(collected.produced)
    assert "this action needs one of the roles maire, responsable, dpo" in {
        text.split("; ")[0] for text in produced
    }
    assert "token expired: sign in again to get a new token from the identity provider" in produced
    assert "malformed signature line" in produced


def test_no_detail_is_made_where_the_test_cannot_read_it(collected: Collector) -> None:
    assert collected.made == set(MADE_BY), (
        "details made by a function: list each in MADE_BY with the functions that word it",
        collected.made ^ set(MADE_BY),
    )


def test_every_detail_of_the_apis_is_said_in_french(collected: Collector) -> None:
    untranslated = sorted(
        f"{d.where}:{d.node.lineno}: {d.sample!r}"
        for d in collected.details
        if d.sample is not None and french.in_french(d.sample) is None
    )
    untranslated += sorted(
        f"made: {text!r}" for text in collected.produced if french.in_french(text) is None
    )
    assert len(collected.produced) > 40
    assert not untranslated, "no French for:\n" + "\n".join(untranslated)


def test_a_translation_keeps_the_values_it_was_given() -> None:
    said = french.in_french(
        "the report for 2025-01-01 to 2025-12-31 was finalised on 2026-01-15: "
        "it cannot be finalised again"
    )
    assert said is not None
    assert "2025" in said and "15" in said and "finalis" in said
    assert french.in_french("matricule PM-0042 already exists") == (
        "Le matricule PM-0042 existe déjà."
    )


def test_a_composite_refusal_is_said_part_by_part() -> None:
    detail = (
        "this action needs one of the roles maire, responsable, dpo; this token's subject "
        "'resp-new' has no agent record in organisation 8c3e0e7e-1f0a-4e8b-9a55-2d3f1b7c9e10: "
        "the maire (or another responsable) must register them as an agent with the role "
        "responsable (POST /v1/organisations/8c3e0e7e-1f0a-4e8b-9a55-2d3f1b7c9e10/agents, "
        "with subject 'resp-new')"
    )
    said = french.in_french(detail)
    assert said is not None, detail
    assert said.startswith("Cette action demande l'un des rôles maire, responsable, dpo")
    assert "'resp-new'" in said and "aucune fiche d'agent" in said


def test_an_unknown_detail_is_never_shown_in_english(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="temoin.dashboard.french"):
        said = french.said("the flux capacitor is out of plutonium")
    assert said == french.UNKNOWN
    assert "flux capacitor" in caplog.text  # logged, for someone to translate it


def test_problem_of_says_the_detail_and_each_field_in_french() -> None:
    conflict = problem_of(
        httpx.Response(409, json={"status": 409, "detail": "this procedure is closed"}),
        "cette procédure",
    )
    assert conflict.detail == "Cette procédure est close."
    invalid = problem_of(
        httpx.Response(
            422,
            json={
                "status": 422,
                "detail": "Invalid value for: body.reference, query.limit",
                "errors": [
                    {
                        "field": "body.reference",
                        "message": "String should have at least 1 character",
                        "type": "string_too_short",
                        "ctx": {"min_length": 1},
                    },
                    {
                        "field": "query.limit",
                        "message": "Input should be less than or equal to 100",
                        "type": "less_than_equal",
                        "ctx": {"le": 100},
                    },
                    {"field": "body.until", "message": "until must be after since"},
                    {"field": "body.x", "message": "Something pydantic says", "type": "odd"},
                ],
            },
        ),
        "la procédure",
    )
    assert invalid.detail == "Valeur incorrecte : reference, limit."
    assert invalid.fields == {
        "reference": "Au moins 1 caractère.",
        "limit": "Au plus 100.",
        "until": "La fin doit être après le début.",
        "x": "Valeur incorrecte.",
    }


VALIDATORS = ("AfterValidator", "BeforeValidator", "PlainValidator", "WrapValidator")
DECORATORS = ("field_validator", "model_validator")


def _validator_messages(collected: Collector) -> list[str]:
    """What the validators of request schemas say (pydantic's ``value_error``, whose words the
    dashboard translates): ValueError's literal messages in each validator and in the
    functions of the tree it calls. Settings' validators speak to the operator, not here."""
    functions = {
        node.name: node
        for where, tree in collected.trees.items()
        if not where.endswith(("settings.py", "config.py"))
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    validators = set()
    for where, tree in collected.trees.items():
        if where.endswith(("settings.py", "config.py")):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _name(node) in VALIDATORS and node.args:
                validators.add(ast.unparse(node.args[0]))
            if isinstance(node, ast.FunctionDef) and any(
                _name(d) in DECORATORS for d in node.decorator_list if isinstance(d, ast.Call)
            ):
                validators.add(node.name)
    reached = {name for name in validators if name in functions}
    for name in list(reached):
        reached |= {
            called
            for node in ast.walk(functions[name])
            if isinstance(node, ast.Call)
            for called in [_name(node)]
            if called in functions
        }
    return [
        text
        for name in reached
        for node in ast.walk(functions[name])
        if isinstance(node, ast.Call) and _name(node) == "ValueError" and node.args
        for text in [_text(node.args[0])]
        if text is not None
    ]


def test_every_validator_of_a_request_is_said_in_french(collected: Collector) -> None:
    messages = _validator_messages(collected)
    assert "the instant must lie between the years 1900 and 2999 (UTC)" in messages
    assert f"a report's days lie between {SAMPLE} and {SAMPLE}" in messages
    untranslated = sorted({m for m in messages if french.in_french(m) is None})
    assert not untranslated, "no French for:\n" + "\n".join(untranslated)
    said = french.field_message({"type": "value_error", "message": f"Value error, {messages[0]}"})
    assert said != french.INVALID and said == french.in_french(messages[0])
