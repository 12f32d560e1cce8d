"""moto's S3 server for ferry's tests, with its create path made atomic.

moto 5.2.5 checks `If-None-Match: *` and then stores without a lock, so
two racing creates of one key can both win; real S3 lets only one. This
wrapper holds one lock around every request that can create a key
(PutObject, CopyObject, CompleteMultipartUpload), and checks CopyObject's
`If-None-Match: *`, which moto ignores, under it. The race tests then test
ferry's requests against the atomicity S3 promises.

moto 5.2.5 also names the root element of its ListParts answer
`ListPartsResponse`, where S3 says `ListPartsResult`; boto3 reads either,
the Rust SDK only S3's. The wrapper renames it.

Usage: locked_moto.py HOST PORT [CREATES_LOG]
PORT 0 picks a free port; the line `* Running on http://HOST:PORT` on
stderr says which. With CREATES_LOG, each create request is logged there
as `METHOD PATH IF-NONE-MATCH` (`-` when absent), one line each.
The server exits when the process that started it does.

With FERRY_TEST_LOSE_COMPLETIONS=1 in its environment, the answer to each
multipart upload's first completion is lost: the completion is done, but
answered 500, as if the answer never came; the client's retry of it is
answered 412, as a store may answer a create-only completion whose key now
exists. What the client then does is up to it.
"""
import os
import sys
import threading
import time
from urllib.parse import parse_qs, unquote

from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from moto.server import MotoRequestHandler
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

app = DomainDispatcherApplication(create_backend_app)
lock = threading.Lock()
creates_log = open(sys.argv[3], 'a', buffering=1) if len(sys.argv) > 3 else None

PRECONDITION = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>PreconditionFailed</Code>'
                b'<Message>At least one of the pre-conditions you specified did not hold</Message>'
                b'<Condition>If-None-Match</Condition></Error>')


def creates(environ):
    method, query = environ['REQUEST_METHOD'], environ.get('QUERY_STRING', '')
    path = environ.get('PATH_INFO', '/').lstrip('/')
    if '/' not in path:
        return False  # a bucket request
    if method == 'PUT':
        return 'partNumber=' not in query  # PutObject or CopyObject, not UploadPart
    return method == 'POST' and 'uploadId=' in query  # CompleteMultipartUpload


def key_exists(environ):
    bucket, key = environ.get('PATH_INFO', '/').lstrip('/').split('/', 1)
    try:
        return s3_backends[DEFAULT_ACCOUNT_ID]['aws'].get_object(bucket, unquote(key)) is not None
    except Exception:
        return False


lose_completions = os.environ.get('FERRY_TEST_LOSE_COMPLETIONS') == '1'
completions_lost = set()

INTERNAL = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
            b'<Message>We encountered an internal error. Please try again.</Message></Error>')


def answer(start_response, status, body):
    start_response(status, [('Content-Type', 'application/xml'),
                            ('Content-Length', str(len(body)))])
    return [body]


def losing(environ, start_response):
    """A completion whose answer is lost (see the module's doc)."""
    upload = parse_qs(environ.get('QUERY_STRING', '')).get('uploadId', [''])[0]
    if upload in completions_lost:
        return answer(start_response, '412 Precondition Failed', PRECONDITION)
    said = {}

    def keep(status, headers, exc_info=None):
        said['status'] = status
        return lambda data: None

    b''.join(app(environ, keep))
    if said.get('status', '').startswith('200'):
        completions_lost.add(upload)
    return answer(start_response, '500 Internal Server Error', INTERNAL)


def lists_parts(environ):
    query = environ.get('QUERY_STRING', '')
    return environ['REQUEST_METHOD'] == 'GET' and 'uploadId=' in query


def list_parts(environ, start_response):
    """moto's ListParts answer with S3's root element."""
    answered = {}

    def keep(status, headers, exc_info=None):
        answered['status'], answered['headers'] = status, headers

    body = b''.join(app(environ, keep)).replace(b'ListPartsResponse', b'ListPartsResult')
    headers = [(k, v) for k, v in answered['headers'] if k.lower() != 'content-length']
    start_response(answered['status'], headers + [('Content-Length', str(len(body)))])
    return [body]


def locked(environ, start_response):
    if lists_parts(environ):
        return list_parts(environ, start_response)
    if not creates(environ):
        return app(environ, start_response)
    with lock:
        if (lose_completions and environ['REQUEST_METHOD'] == 'POST'
                and 'uploadId=' in environ.get('QUERY_STRING', '')):
            return losing(environ, start_response)
        if creates_log is not None:
            creates_log.write('%s %s %s\n' % (environ['REQUEST_METHOD'], environ.get('PATH_INFO'),
                                              environ.get('HTTP_IF_NONE_MATCH', '-')))
        if (environ.get('HTTP_X_AMZ_COPY_SOURCE') and environ.get('HTTP_IF_NONE_MATCH') == '*'
                and key_exists(environ)):
            start_response('412 Precondition Failed', [('Content-Type', 'application/xml'),
                                                       ('Content-Length', str(len(PRECONDITION)))])
            return [PRECONDITION]
        # The body is made inside the lock, so the write is done before the
        # lock is let go.
        return [b''.join(app(environ, start_response))]


def exit_with_parent():
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


class QuietHandler(MotoRequestHandler):
    def log_request(self, *args, **kwargs):
        pass  # a line per request would only fill the test's pipe


if __name__ == '__main__':
    threading.Thread(target=exit_with_parent, daemon=True).start()
    run_simple(sys.argv[1], int(sys.argv[2]), locked, threaded=True, request_handler=QuietHandler)
