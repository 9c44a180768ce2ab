"""`POST /admin/labels`: labels that arrive later, sent to the model server.

    POST /admin/labels
    Authorization: Bearer $MLPIPE_ADMIN_TOKEN
    {"labels": [{"request_id": "...", "row": 0, "label": "Yes"}, ...], "skip_invalid": false}

The same pairs and checks as `mlpipe feedback` (`components.common.labels.add_labels`): each
pair names an answered row of the prediction log by its request id (returned with every
prediction) and row (its place in the request, 0 when left out); the label must be one of the
answering version's classes (a finite number for a regression model) and not already in the
labels lake. The route is under /admin/, so `serving.http_app.AdminGuard` requires the admin
token before the body is read.

Answers:
- 200 {"pairs", "appended", "refused", "examples", "path", "skipped_files"}: appended (with
  skip_invalid, the valid pairs, and `refused` counts the others per kind);
- 422 {"error", and the same counts}: a pair was invalid, nothing was written (or, with
  skip_invalid, no pair was valid);
- 400 {"error"}: the body is not JSON, not {"labels": [...]}, or a pair lacks request_id/label;
- 413 {"error"}: more than MAX_LABELS pairs in one request;
- 503 {"error"}: the labels lake could not be written (nothing was).

Reading the log and the lake runs in a worker thread: predictions go on being answered. A live
prediction log is flushed first (for at most FLUSH_SECONDS), so a request answered a moment ago
can be labelled at once.
"""

import asyncio
import json
import logging

from components.common.errors import PipelineInputError
from components.common.labels import (
    LabelsLakeUnavailable,
    add_labels,
    pairs_from_records,
    schemas_from_registry,
)

logger = logging.getLogger(__name__)

ADMIN_LABELS_PATH = "/admin/labels"
# The most pairs in one request: a larger batch belongs in a file for `mlpipe feedback`.
MAX_LABELS = 10_000
# The longest wait for the prediction log's writer before the pairs are checked.
FLUSH_SECONDS = 5.0


def _schema_lookup(model):
    """The answering version's schema: the served version's own, else the registry's."""
    from_registry = None if model.registry is None else schemas_from_registry(model.registry)

    def schema_for(version: str | None) -> dict | None:
        if version is not None and version == model.version and model.schema:
            return model.schema
        return from_registry(version) if from_registry is not None else None

    return schema_for


def _body(raw: bytes) -> tuple[list, bool]:
    """(the pairs, skip_invalid) of a request body, or PipelineInputError naming the field."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise PipelineInputError("request body: not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("labels"), list):
        raise PipelineInputError(
            'request body: expected {"labels": [{"request_id", "label", "row"}, ...]}'
        )
    skip_invalid = body.get("skip_invalid", False)
    if not isinstance(skip_invalid, bool):
        raise PipelineInputError("field 'skip_invalid': expected true or false")
    return body["labels"], skip_invalid


def add_labels_route(app, model, labels_uri: str, log_uri: str, prediction_log=None) -> None:
    """Register `POST /admin/labels` on a FastAPI app (KServe's).

    Args:
        app: the FastAPI app; its AdminGuard (serving.http_app) guards every /admin/ route.
        model: the served model (`TabularModel`): its name is the lakes' partition, its schema
            and registry give each answering version's classes.
        labels_uri: the labels lake.
        log_uri: the prediction log the labels name rows of.
        prediction_log: the server's live `PredictionLog`, flushed before checking; or None.
    """
    from fastapi import Request
    from fastapi.responses import JSONResponse

    def work(pairs, skip_invalid: bool):
        if prediction_log is not None and not prediction_log.flush(timeout=FLUSH_SECONDS):
            logger.warning("labels: the prediction log was not flushed within %ss", FLUSH_SECONDS)
        return add_labels(
            pairs,
            labels_uri=labels_uri,
            log_uri=log_uri,
            model_name=model.name,
            schema_for=_schema_lookup(model),
            skip_invalid=skip_invalid,
            source=f"POST {ADMIN_LABELS_PATH}",
        )

    async def admin_labels(request: Request) -> JSONResponse:
        # AdminGuard has checked the token.
        try:
            records, skip_invalid = _body(await request.body())
            if len(records) > MAX_LABELS:
                return JSONResponse(
                    status_code=413,
                    content={
                        "error": f"field 'labels': {len(records):,} pairs, at most "
                        f"{MAX_LABELS:,} per request (use mlpipe feedback for a file)"
                    },
                )
            pairs = pairs_from_records(records, "field 'labels'")
            outcome = await asyncio.to_thread(work, pairs, skip_invalid)
        except LabelsLakeUnavailable as error:
            logger.warning("labels: %s", error)
            return JSONResponse(status_code=503, content={"error": str(error)})
        except PipelineInputError as error:
            return JSONResponse(status_code=400, content={"error": str(error)})
        logger.info("%s", outcome.line())
        for line in outcome.skipped:
            logger.warning("labels: %s", line)
        if outcome.refused and not outcome.appended:
            return JSONResponse(
                status_code=422, content={"error": outcome.line(), **outcome.as_dict()}
            )
        return JSONResponse(content=outcome.as_dict())

    app.add_api_route(ADMIN_LABELS_PATH, admin_labels, methods=["POST"], tags=["admin"])
