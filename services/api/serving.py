"""gunicorn's settings for the API, shared by every way of running it:

    gunicorn -c python:services.api.serving --bind ADDR --workers N 'services.api.app:create_app()'

Threaded workers, because a long poll (`GET /issuance-requests/{id}?wait=`) holds its request
while it waits: with one request per worker, two waiting clients would stall a 2-worker API.
A waiting request holds no database connection (see shared.waiting)."""

worker_class = "gthread"
threads = 8
timeout = 120
graceful_timeout = 10
