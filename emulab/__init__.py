"""emulab: a mobile-edge-computing testbed (4G + MEC + multi-cloud) with RSerPool workload offloading."""

__version__ = "0.1.0"
