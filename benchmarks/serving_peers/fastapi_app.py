"""The FastAPI peer: a minimal app serving the same model file, one uvicorn worker.

    python -m benchmarks.serving_peers.fastapi_app --model_dir DIR --port N
    python -m benchmarks.serving_peers.fastapi_app --floor --name NAME --port N

What a competent engineer would write in a few lines, with no framework of its own: one route,
the V1 row format (`{"instances": [{feature: value, ...}, ...]}`), orjson both ways, the rows as a
DataFrame through the project's `as_model_input` (categoricals as strings, as training built them)
and `model.predict`. Unlike our server it validates nothing: a malformed request is a 500, not a
400 naming the field. The route handler is `async def`, so prediction runs on the event loop, as
in our KServe server and in MLServer with `parallel_workers: 0`.

With --floor it is the HTTP floor of this machine: the same route reads the request's body and
answers a constant, without parsing, validating or predicting anything (no model is loaded). No
server answering over this HTTP stack can be faster.
"""

import argparse
import sys

from components.deploy.logic import LOOPBACK, load_model_folder


def create_app(model_dir: str):
    """The app, with the registered model folder's model loaded (its checksum verified)."""
    import orjson
    import pandas as pd
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    from components.common.schema import as_model_input, feature_names

    model, metadata = load_model_folder(model_dir)
    schema = metadata["schema"]
    columns = feature_names(schema)
    version = metadata["version"]
    app = FastAPI()

    @app.get("/ready")
    async def ready():
        return {"ready": True}

    @app.post(f"/v1/models/{metadata['name']}:predict")
    async def predict(request: Request):
        rows = orjson.loads(await request.body())["instances"]
        frame = as_model_input(pd.DataFrame.from_records(rows, columns=columns), schema)
        predictions = model.predict(frame)
        body = {"predictions": predictions.tolist(), "model_version": version}
        return Response(orjson.dumps(body), media_type="application/json")

    return app


FLOOR_ANSWER = b'{"predictions":[0],"model_version":"floor"}'


def create_floor_app(name: str):
    """The HTTP floor: the predict route reads the body and answers a constant."""
    from fastapi import FastAPI, Request
    from fastapi.responses import Response

    app = FastAPI()

    @app.get("/ready")
    async def ready():
        return {"ready": True}

    @app.post(f"/v1/models/{name}:predict")
    async def predict(request: Request):
        await request.body()
        return Response(FLOOR_ANSWER, media_type="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_dir", help="a registered model folder")
    parser.add_argument("--floor", action="store_true", help="answer a constant (no model)")
    parser.add_argument("--name", help="with --floor: the model name in the route")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.floor == bool(args.model_dir) or (args.floor and not args.name):
        parser.error("give --model_dir, or --floor with --name")
    uvicorn.run(
        create_floor_app(args.name) if args.floor else create_app(args.model_dir),
        host=LOOPBACK,
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
