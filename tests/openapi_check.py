"""Check real answers against an OpenAPI 3.1 document: the status is one the operation lists, and
a JSON body matches the schema given for that status (``$ref`` resolved in the document)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

__all__ = ["OpenAPI"]

_URN = "urn:berth-openapi"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass
class OpenAPI:
    path: Path
    document: dict[str, Any] = field(init=False)
    checked: set[tuple[str, str, str]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.document = yaml.safe_load(self.path.read_text())
        validate_spec(self.document)  # a valid OpenAPI 3.1 document
        resource = Resource(contents=self.document, specification=DRAFT202012)
        self._registry: Registry[Any] = Registry().with_resource(_URN, resource)

    @property
    def prefix(self) -> str:
        servers = self.document.get("servers") or [{"url": ""}]
        return str(servers[0]["url"]).rstrip("/")

    def operations(self) -> list[tuple[str, str]]:
        return [
            (method.upper(), template)
            for template, item in self.document["paths"].items()
            for method in item
            if method in ("get", "post", "put", "patch", "delete")
        ]

    def match(self, method: str, url_path: str) -> str:
        """The document's path template for a request path (below the server prefix)."""
        assert url_path.startswith(self.prefix), (url_path, self.prefix)
        rest = url_path[len(self.prefix) :]
        for template, item in self.document["paths"].items():
            pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]*", re.escape(template))
            if re.fullmatch(pattern, rest) and method.lower() in item:
                return str(template)
        raise AssertionError(f"{method} {rest} is not in {self.path.name}")

    def check(self, response: httpx.Response) -> Any:
        """Assert that ``response`` is documented; return its JSON body (if any)."""
        method = response.request.method
        template = self.match(method, response.request.url.path)
        responses = self.document["paths"][template][method.lower()]["responses"]
        status = str(response.status_code)
        assert status in responses, (
            f"{method} {template} answered {status}, which {self.path.name} does not list:"
            f" {response.text[:200]}"
        )
        self.checked.add((method, template, status))
        answer = responses[status]
        pointer = f"/paths/{_escape(template)}/{method.lower()}/responses/{status}"
        if "$ref" in answer:
            pointer = answer["$ref"].removeprefix("#")
            answer = self.resolve(answer["$ref"])
        content = answer.get("content") or {}
        if "application/json" in content:
            assert response.headers["content-type"].startswith("application/json")
            body = response.json()
            schema_pointer = f"{pointer}/content/application~1json/schema"
            validator = Draft202012Validator(
                {"$ref": f"{_URN}#{schema_pointer}"}, registry=self._registry
            )
            errors = sorted(validator.iter_errors(body), key=lambda e: list(e.path))
            assert not errors, f"{method} {template} {status}: " + "; ".join(
                f"{list(e.path)}: {e.message}" for e in errors[:5]
            )
            return body
        kinds = [kind.split(";")[0] for kind in content]
        if kinds:
            assert response.headers["content-type"].split(";")[0] in kinds
        return response.text

    def resolve(self, ref: str) -> dict[str, Any]:
        node: Any = self.document
        for token in ref.removeprefix("#/").split("/"):
            node = node[token.replace("~1", "/").replace("~0", "~")]
        assert isinstance(node, dict)
        return node

    def documented(self) -> set[tuple[str, str, str]]:
        return {
            (method, template, status)
            for method, template in self.operations()
            for status in self.document["paths"][template][method.lower()]["responses"]
        }
