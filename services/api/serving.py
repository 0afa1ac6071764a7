"""gunicorn's settings for the API, shared by every way of running it:

    gunicorn -c python:services.api.serving --bind ADDR --workers N 'services.api.app:create_app()'

gevent workers: each connection is a greenlet, so a client that sends its headers a byte at a
time (or a long poll, `GET /issuance-requests/{id}?wait=`, that holds its request while it
waits) costs a few kilobytes, not a worker thread; a handful of slow clients cannot make
/healthz or the API unreachable. psycopg (3.1.14 and later), redis-py and kombu cooperate with
gevent's patched sockets. In docker-compose and Kubernetes a reverse proxy (nginx,
infra/nginx/certfleet.conf.template) also reads every request whole before gunicorn sees it.
A waiting request holds no database connection (see shared.waiting)."""

worker_class = "gevent"
worker_connections = 1000
timeout = 120
graceful_timeout = 10
