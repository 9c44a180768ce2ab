"""Hyperparameter search with Ray Tune.

Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is first imported. Unset on Linux, Ray
advertises the machine's network address and listens on every interface; 0 keeps an embedded
Ray on 127.0.0.1. This package imports Ray, so it sets the variable before anything here does,
for the embedded Ray only: a process that joins a cluster (RAY_ADDRESS set; the tune step sets it
from `ray.address` before importing this package) and the cluster's own nodes keep Ray's normal
networking, or the nodes could not reach each other. The images leave the variable unset.
"""

from components.common.ray_cluster import pin_embedded_ray_to_loopback

pin_embedded_ray_to_loopback()
