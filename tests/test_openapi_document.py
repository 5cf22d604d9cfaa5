"""The OpenAPI document, built in-process from the service's routes, is valid OpenAPI 3.1 in
both auth modes, and says what each mode requires."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from festora.config import Settings
from festora.openapi import openapi_document


@pytest.fixture(scope="module")
def service():  # type: ignore[no-untyped-def]
    import service

    return service


@pytest.mark.parametrize("api_key", [None, "k-3f1a"])
def test_document_is_valid_in_both_auth_modes(service, api_key: str | None) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(api_key=api_key, rate_limit_enabled=api_key is not None)
    document = openapi_document(service.FestoraVision, service.health_app.routes, settings)
    validate(document)
    analyze = document["paths"]["/v1/analyze"]["post"]
    secured = api_key is not None
    assert ("security" in analyze) is secured and ("401" in analyze["responses"]) is secured
    assert ("429" in analyze["responses"]) is secured
    assert ("securitySchemes" in document["components"]) is secured
    assert {route.route for route in service.FestoraVision.apis.values()} <= set(document["paths"])
