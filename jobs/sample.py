"""python -m jobs.sample: draw a new image from a Gaussian mixture fitted by jobs.compress --method gmm."""

import sys

from mixlib.core.cli import job_main
from mixlib.image.sample import SampleSettings, plan, run, runs_here, worker_paths

DESCRIPTION = ("Draw every pixel of a new image independently from a Gaussian mixture, chunk-parallel on a Dask "
               "cluster. Every option can also be set in the TOML config file; a flag beats the file.")

main = job_main(SampleSettings, "sample", DESCRIPTION, plan, run, worker_paths=worker_paths, runs_here=runs_here)

if __name__ == "__main__":
    sys.exit(main())
