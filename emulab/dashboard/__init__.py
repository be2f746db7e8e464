"""`emulab dashboard`: a live web page of the running testbed (topology with link rates, pools and
registrars, radio, the Fractal Generator pool user's picture and timeline, experiment progress) with
controls that act through the same control socket as the command line. See docs/dashboard.md."""
