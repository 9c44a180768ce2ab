"""Batch predictions: score a lake, a file or an object-store source with a registered version.

This package may start an embedded Ray (engine ray), so it keeps Ray on 127.0.0.1 before anything
here imports it, unless the process joins a cluster (components.common.ray_cluster).
"""

from components.common.ray_cluster import pin_embedded_ray_to_loopback

pin_embedded_ray_to_loopback()
