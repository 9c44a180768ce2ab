"""Hyperparameter search with Ray Tune.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is first imported. Unset on Linux, Ray
advertises the machine's network address and listens on every interface; 0 keeps an embedded
Ray on 127.0.0.1. This package imports Ray, so it sets the variable before anything here does.
A user who runs a real multi-node cluster sets it to 1 themselves.
"""

import os

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
