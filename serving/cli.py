"""`python -m serving`: the KServe model server for one registered model version, or for an alias.

    python -m serving --model_dir DIR_OR_URI [--http_port 8080] [--host 127.0.0.1]
    python -m serving --model_store URI --model_name NAME [--alias champion]
        [--max_batch_rows 10000] [--max_body_bytes 10485760] [--prediction_log URI]

It serves the KServe SDK's own REST app, V1 (`/v1/models/NAME:predict`) and V2 (the Open
Inference Protocol, `/v2/models/NAME/infer`), with one worker and no gRPC, bound to `--host`:
127.0.0.1 unless told otherwise, where the stock `kserve.ModelServer` always binds 0.0.0.0.

What it serves:
  --model_dir DIR_OR_URI   one version folder: a path, file://, or s3:// / gs:// (downloaded into
                           a temporary folder first); every file's SHA-256 is checked before the
                           model is unpickled.
  --model_store URI        the registry (a path, file://, s3://, gs://) and --model_name NAME:
  --alias champion         serve the version this alias (or a version like v3) names. On SIGHUP
                           (which therefore does not end this server), or `POST /admin/reload`
                           with the admin token, the alias is read again and a new version is
                           loaded in the background and swapped in at once; requests in flight
                           finish on the version they started with. The answer is {"version",
                           "previous", "changed", "alias"}; a version that cannot be loaded (a
                           checksum differs, it is missing) is refused with HTTP 409, a failure
                           of the store with 500, and the old version keeps serving.

The admin token: `POST /admin/reload` (and KServe's /v2/repository/... load and unload routes)
need the header `Authorization: Bearer TOKEN`, where TOKEN is the environment variable
MLPIPE_ADMIN_TOKEN of the server (at least 16 characters; on a cluster, from a Secret). It is
read from the environment only, never from the command line. Without it those routes are off
(HTTP 403); a missing or wrong token gets HTTP 401. SIGHUP needs no token.

The prediction log: with --prediction_log URI (env MLPIPE_PREDICTION_LOG; off when neither is
given), every answered prediction is recorded, off the request path, in a Hive-partitioned
Parquet lake, URI/model=NAME/date=YYYY-MM-DD/part-*.parquet (URI: a folder, s3:// or gs://):
the request id, the time, the version that answered, every feature as received, the
prediction, and the class probabilities of a classifier (asked for or not). The request id is
the `ce-id` header, else `X-Request-Id`, else (V2) the body's `id`, else a new random id; it comes
back as the V2 answer's `id` and in every answer's `X-Request-Id` header, so that a label can
be sent for it later. Writing never slows or fails a request: when the writer falls behind,
records are dropped and counted. The counters (rows written, dropped, queued; files; write
errors) are at GET /v2/models/NAME/prediction-log and in /metrics; the log is flushed after a
reload and on SIGTERM/SIGINT, which prints "prediction log: N rows written to URI, M dropped".
With --labels URI too (env MLPIPE_LABELS), `POST /admin/labels` (with the admin token) appends
labels for logged rows to that labels lake, checked as `mlpipe feedback` checks them.

What answers (--runtime, env MLPIPE_RUNTIME):
  auto (the default)       the version's ONNX graph (model.onnx, run by onnxruntime) when it is
                           proven equal to model.joblib: its export passed parity, and on the
                           held-out rows stored with it (parity_rows.parquet) this server's
                           ONNX answers are checked again when the version loads: identical
                           labels, probabilities within 1e-5. Otherwise scikit-learn, and the
                           start-up line says why. Rows the graph's probabilities leave within
                           1e-5 of the decision are answered by scikit-learn.
  onnx                     the same, but a version without a proven graph is refused: one
                           `error:` line and exit code 2 (a reload to one is refused, HTTP 409).
  sklearn                  always model.joblib.
The start-up line ("serving NAME v3 at URL; runtime onnx (...)"), each reload's line and the V2
model metadata's "platform" (onnxruntime_onnx or sklearn) say which runtime answers.

Every request is validated before the model sees it: a client's mistake is an HTTP 400 naming
the field and the row, never a 500, and the server keeps serving:
  - a missing or unknown feature, a value of the wrong type, a string for a number;
  - ±Infinity anywhere, and null or NaN (a missing value, which the model imputes) in a feature
    whose schema entry says `"nullable": false`; NaN and Infinity are not JSON, so a V1 body
    holding them is refused naming the row and the feature;
  - an empty batch, a body that is not JSON, a body nested deeper than 64 levels;
  - HTTP 413 for more rows than --max_batch_rows (env MLPIPE_MAX_BATCH_ROWS, default 10000),
    and for a body over --max_body_bytes (env MLPIPE_MAX_BODY_BYTES, default 10 MiB), refused
    before it is read in full.

Class probabilities, when asked: V1 `{"instances": [...], "return_probabilities": true}` adds
"probabilities" (one list per row, in the order of "classes") and "classes"; V2
`"parameters": {"return_probabilities": true}` (or asking for the output "probabilities") adds an
FP64 output "probabilities" of shape [rows, classes] whose parameters hold "classes" as a JSON
array in a string (V2 parameters are scalars). Every answer names the model version.

Every feature of the schema is required, sensitive columns included: a model with fairness
post-processing (bias.mitigation threshold_optimizer) reads each row's group from its sensitive
column, and refuses a group it was not fitted with, also with a 400.
"""

import argparse
import os
import sys

from components.common.errors import PipelineInputError
from serving.http_app import ADMIN_RELOAD_PATH, ADMIN_TOKEN_ENV, DEFAULT_MAX_BODY_BYTES
from serving.kserve_compat import server_flags
from serving.model import DEFAULT_ALIAS
from serving.protocol import DEFAULT_MAX_BATCH_ROWS
from serving.runtime import DEFAULT_RUNTIME, RUNTIME_ENV, RUNTIMES
from serving.server import LOOPBACK, serve

MAX_BATCH_ROWS_ENV = "MLPIPE_MAX_BATCH_ROWS"
MAX_BODY_BYTES_ENV = "MLPIPE_MAX_BODY_BYTES"
PREDICTION_LOG_ENV = "MLPIPE_PREDICTION_LOG"
LABELS_ENV = "MLPIPE_LABELS"


def _limit(env: str):
    """An argparse type: a positive integer, from the command line or from `env`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value <= 0:
            raise argparse.ArgumentTypeError(
                f"expected a positive integer (from the command line or {env}), got {text!r}"
            )
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """KServe's own server flags, plus what to serve, --host and the request limits."""
    parser = argparse.ArgumentParser(
        prog="python -m serving",
        description="Serve a registered model version with KServe (V1 and V2 REST, no gRPC).",
        # The module's docstring says what is served, what is refused, and how to reload.
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[server_flags()],
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model_dir",
        help="the registered model folder (a path, file://, or an s3:// or gs:// version URI)",
    )
    source.add_argument(
        "--model_store",
        help="serve the version --alias names in this registry (with --model_name); "
        f"SIGHUP, or POST {ADMIN_RELOAD_PATH} with the token in {ADMIN_TOKEN_ENV}, reads the "
        "alias again",
    )
    parser.add_argument(
        "--alias",
        help=f"with --model_store: {DEFAULT_ALIAS} (the default), candidate, or a version such "
        "as v3",
    )
    parser.add_argument(
        "--host", default=LOOPBACK, help="the address to bind (0.0.0.0 only inside a container)"
    )
    parser.add_argument(
        "--max_batch_rows",
        type=_limit(MAX_BATCH_ROWS_ENV),
        default=os.environ.get(MAX_BATCH_ROWS_ENV, str(DEFAULT_MAX_BATCH_ROWS)),
        help=f"the most rows per request, HTTP 413 above (env {MAX_BATCH_ROWS_ENV}, "
        f"default {DEFAULT_MAX_BATCH_ROWS})",
    )
    parser.add_argument(
        "--max_body_bytes",
        type=_limit(MAX_BODY_BYTES_ENV),
        default=os.environ.get(MAX_BODY_BYTES_ENV, str(DEFAULT_MAX_BODY_BYTES)),
        help=f"the largest request body in bytes, HTTP 413 above (env {MAX_BODY_BYTES_ENV}, "
        f"default {DEFAULT_MAX_BODY_BYTES}: 10 MiB)",
    )
    parser.add_argument(
        "--prediction_log",
        default=os.environ.get(PREDICTION_LOG_ENV) or None,
        metavar="URI",
        help="record every answered prediction in this Parquet lake (a folder, s3://, gs://; "
        f"env {PREDICTION_LOG_ENV}); off when neither is given",
    )
    parser.add_argument(
        "--labels",
        default=os.environ.get(LABELS_ENV) or None,
        metavar="URI",
        help="with --prediction_log: POST /admin/labels (admin token) appends labels for "
        f"logged rows to this labels lake (env {LABELS_ENV}); off when neither is given",
    )
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get(RUNTIME_ENV, DEFAULT_RUNTIME),
        help="what answers: auto (the default: the version's ONNX graph when it is proven "
        "equal to model.joblib on its held-out rows, else scikit-learn, saying why), onnx "
        "(refuse a version without a proven graph) or sklearn "
        f"(env {RUNTIME_ENV})",
    )
    # --model_name comes from KServe's parser; None means "the name in metadata.json".
    # gRPC defaults to off here: `--enable_grpc true` is refused rather than ignored.
    parser.set_defaults(model_name=None, enable_grpc=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the server; a bad model folder or store is one `error: ...` line and exit code 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # KServe flags this server cannot honour are refused, not silently ignored.
    if args.enable_grpc:
        parser.error("--enable_grpc: this server serves REST only")
    if args.workers != 1:
        parser.error("--workers: this server runs one worker")
    if args.model_store and not args.model_name:
        parser.error("--model_store needs --model_name (the model's name in the store)")
    if args.alias and not args.model_store:
        parser.error("--alias goes with --model_store (--model_dir serves one folder)")
    rest_options = {
        key: getattr(args, key)
        for key in (
            "event_loop",
            "timeout_keep_alive",
            "access_log_format",
            "ssl_certfile",
            "ssl_keyfile",
        )
    }
    try:
        serve(
            args.model_dir,
            host=args.host,
            port=args.http_port,
            name=args.model_name,
            rest_options=rest_options,
            model_store=args.model_store,
            alias=args.alias or DEFAULT_ALIAS,
            max_batch_rows=args.max_batch_rows,
            max_body_bytes=args.max_body_bytes,
            prediction_log=args.prediction_log or None,
            labels=args.labels or None,
            runtime=args.runtime,
        )
    except PipelineInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
