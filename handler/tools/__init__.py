"""The user's side: the client, `cloud-worker submit`, the job toolkit and the demo."""
