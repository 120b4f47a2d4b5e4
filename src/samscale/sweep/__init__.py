"""Many runs: executors (serial, local pool, Ray) and the resumable sweep of a study."""
