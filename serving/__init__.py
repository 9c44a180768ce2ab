"""The model server: a registered model version, or a registry alias, served with KServe.

Serving is not a pipeline stage: the deploy step starts it (`python -m serving`) as a
subprocess for its smoke test, the serving image runs it, and `mlpipe serve` runs it in the
foreground. It uses `components.common` and no stage. One module per job:

- `protocol`: V1 and V2 requests decoded and validated, column by column; the model's input;
- `model`: the `kserve.Model` that loads a version, predicts, and follows an alias (hot reload);
- `http_app`: what is added to KServe's app: the body limit, error answers, the admin route;
- `server`: the process: `serve()` binds the app to one address and handles the signals;
- `cli`: the command line (`python -m serving`, `__main__`);
- `kserve_compat`: every use of KServe beyond its public model API, so that a KServe upgrade
  changes that one file.
"""
