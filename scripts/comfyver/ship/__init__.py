"""Stage 4, environment -> production: push the image (`push`), point a RunPod endpoint at it (`deploy`),
submit jobs and fetch their outputs (`jobclient`). May import every earlier stage."""
