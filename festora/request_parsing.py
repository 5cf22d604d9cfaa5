"""How BentoML 1.4.40 reads a request body, made to answer a client's mistake as a 4xx.

Left as it is, BentoML answers 500 (and logs an ERROR with a traceback) for a multipart body
without a boundary, a binary part under a name it expects to be text, or a text part where it
expects a file (which it would then download itself, past our URL policy); it answers 400 with
the field errors' input and context dropped for a body that fails validation. `install()` puts
four small wrappers in place, once per process:

- the input model's `from_http_request`: a `ValidationError` or a framing error (starlette's
  `HTTPException`) becomes `ValidationFailed`, 422 `validation_error` with FastAPI-style detail;
- the body parsers: JSON validated in strict mode (what the OpenAPI document says is what is
  accepted: no `0` for `false`, no `"5"` for 5); multipart file fields take only file parts,
  text fields only UTF-8 text, parts under other names are ignored (as pydantic ignores
  unknown JSON keys);
- the API endpoint: an `ApiError` or a 4xx `BentoMLException` is answered in the envelope and
  logged at INFO without a traceback; a caller gone before its body arrived (in a runner: the
  API worker killed mid-call) is logged at INFO and answered 499, which nobody reads; anything
  else, a `ValidationError` raised past the input included, stays BentoML's 500 with its
  ERROR line and traceback.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from festora.errors import ApiError, ValidationFailed, error_response, validation_details

logger = logging.getLogger("festora.requests")

T = TypeVar("T")
_PATCHED = "_festora_request_parsing"
CALLER_GONE = 499  # nginx's "client closed request": only the access log sees it


def install() -> None:
    from _bentoml_impl.serde import JSONSerde, MultipartSerde
    from _bentoml_impl.server.app import ServiceAppFactory
    from _bentoml_sdk.io_models import IOMixin

    if getattr(ServiceAppFactory.api_endpoint, _PATCHED, False):
        return
    parse = IOMixin.from_http_request.__func__  # type: ignore[attr-defined]
    IOMixin.from_http_request = classmethod(_rejecting_bad_input(parse))  # type: ignore[method-assign]
    MultipartSerde.parse_request = _parse_multipart  # type: ignore[method-assign]
    JSONSerde.deserialize_model = _strict_json  # type: ignore[method-assign]
    ServiceAppFactory.api_endpoint = _answering_client_errors(ServiceAppFactory.api_endpoint)  # type: ignore[method-assign]


def _rejecting_bad_input(parse: Any) -> Any:
    @functools.wraps(parse)
    async def from_http_request(cls: type, request: Request, serde: Any) -> Any:
        try:
            return await parse(cls, request, serde)
        except ValidationError as exc:
            raise ValidationFailed(
                "request body failed validation",
                detail=validation_details(exc.errors(include_url=False)),
            ) from None
        except HTTPException as exc:
            if exc.status_code >= 500:
                raise
            raise ValidationFailed(f"request body could not be read: {exc.detail}") from None

    return from_http_request


async def _parse_multipart(self: Any, request: Request, cls: Any) -> Any:
    form = await request.form()
    data: dict[str, Any] = {}
    for name in form:
        if name not in cls.model_fields:
            continue
        values = form.getlist(name)
        if name in cls.multipart_fields:
            if not all(isinstance(v, UploadFile) for v in values):
                raise _part_error(name, "a file part (with a filename)", "file_expected")
            data[name] = values if _is_list_field(cls, name) else values[-1]
            continue
        value = values[-1]
        if isinstance(value, UploadFile):
            try:
                value = (await value.read()).decode("utf-8")
            except UnicodeDecodeError:
                raise _part_error(name, "text, not binary data", "string_unicode") from None
        data[name] = _form_value(value, _accepts_text(cls, name))
    return cls.model_validate(data, strict=True)


def _form_value(raw: str, text_field: bool) -> Any:
    """A form field's value: JSON when it parses (`true`, `0.5`, `null`, `[...]`), except that
    a text field keeps the text it was sent (`image_id=123` is the string "123")."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return raw if text_field and value is not None and not isinstance(value, str) else value


def _accepts_text(cls: Any, name: str) -> bool:
    from typing import get_args

    annotation = cls.model_fields[name].annotation
    return annotation is str or str in get_args(annotation)


def _strict_json(self: Any, payload: Any, cls: Any) -> Any:
    """JSON bodies validated in strict mode, as the OpenAPI document describes them: `0` or
    `"true"` is not a boolean, `"5"` not a number."""
    return cls.model_validate_json(b"".join(payload.data) or b"{}", strict=True)


def _is_list_field(cls: Any, name: str) -> bool:
    from typing import get_args

    from _bentoml_sdk.typing_utils import is_list_type, is_union_type

    annotation = cls.model_fields[name].annotation
    if is_union_type(annotation):
        annotation = get_args(annotation)[0]
    return is_list_type(annotation)


def _part_error(name: str, expected: str, error_type: str) -> ValidationFailed:
    message = f"form field '{name}' must be {expected}"
    return ValidationFailed(
        "request body failed validation",
        detail=[{"type": error_type, "loc": ["body", name], "msg": message, "input": None}],
    )


def _answering_client_errors(endpoint: Any) -> Any:
    from bentoml.exceptions import BentoMLException

    @functools.wraps(endpoint)
    async def api_endpoint(self: Any, name: str, request: Request) -> Response:
        try:
            return await endpoint(self, name, request)
        except ApiError as exc:
            _log_rejected(request, exc.status_code, exc.code, exc.detail)
            return exc.to_response()
        except ClientDisconnect:
            logger.info("caller gone before its body arrived", extra={"path": request.url.path})
            return Response(status_code=CALLER_GONE)
        except ValidationError as exc:
            # Past the input's parsing this is our bug (a result that fails its own model),
            # not the caller's: BentoML would call it a 400.
            raise RuntimeError("a value failed validation inside the service") from exc
        except BentoMLException as exc:
            status = exc.error_code.value
            if status >= 500:
                raise
            code = "unsupported_media_type" if status == 415 else "bad_request"
            _log_rejected(request, status, code, None)
            return error_response(status, code, str(exc))

    setattr(api_endpoint, _PATCHED, True)
    return api_endpoint


def _log_rejected(request: Request, status: int, code: str, detail: Any) -> None:
    """One INFO line a rejected request: where, what, and which fields, never their values."""
    fields = (
        [".".join(map(str, e["loc"])) for e in detail if isinstance(e, dict) and "loc" in e]
        if isinstance(detail, list)
        else []
    )
    logger.info(
        "request rejected",
        extra={"path": request.url.path, "status": status, "error": code, "fields": fields},
    )
