#!/usr/bin/env python3
"""An external sluice worker, in Python 3 with the standard library only.

It leases jobs of one queue over the sluice HTTP API (long-polling while the queue is
empty), works on one job at a time while a thread heartbeats its lease, and posts each
result with an Idempotency-Key made of the job id and the attempt number, so a post that is
retried after a network error is applied once. The jobs it gets are those sluice's own
workers do not run: `external` pipeline steps and standalone jobs of custom kinds.

The work is `work()` below: by default it sleeps `payload.sleep_ms` (checking for a
cancellation while it sleeps), fails when `payload.fail` is set, and answers
`{"echo": payload.echo, "worker": ..., "attempt": ...}`. With `--exec CMD`, it runs CMD
through the shell instead, with the leased job (JSON) on standard input: standard output
is the output (JSON, else kept as a string), a non-zero exit a failure. Replace `work()`
with your own.

SIGTERM or SIGINT: no new lease; the current job is finished and its result posted, then
the worker exits 0 (a lease already waiting returns within --wait-ms). A second signal
exits at once; the job's lease then expires and the job is retried as a new attempt.

Settings: SLUICE_API_URL (default http://127.0.0.1:7070) and SLUICE_TOKEN (a token of role
worker or higher; none when authentication is off), or --api and --token.

    examples/external-worker.py --queue media --worker thumbs-1
    examples/external-worker.py --queue media --exec './make-thumbnail.sh'
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request


class Api:
    """The few calls an external worker makes."""

    def __init__(self, url, token):
        self.url = url.rstrip("/")
        self.token = token

    def post(self, path, body, headers=None, timeout=30.0):
        """POSTs JSON; returns (status, decoded body). Raises OSError when unreachable."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), method="POST"
        )
        request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", "Bearer " + self.token)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            text = error.read()
            try:
                return error.code, json.loads(text)
            except ValueError:
                return error.code, {"detail": text.decode(errors="replace")}


class Heartbeat(threading.Thread):
    """Extends a job's lease every third of its length until stopped.

    `lost` is set when the lease is gone (409 LEASE_LOST: the work is wasted, its result
    would be refused); `cancelled` when the job's execution was cancelled by an operator.
    """

    def __init__(self, api, job, lease_ms, log):
        super().__init__(daemon=True)
        self.api, self.job, self.lease_ms, self.log = api, job, lease_ms, log
        self.done = threading.Event()
        self.lost = threading.Event()
        self.cancelled = threading.Event()

    def run(self):
        path = "/v1/jobs/%s/heartbeat" % self.job["id"]
        body = {"token": self.job["token"], "extend_ms": self.lease_ms}
        while not self.done.wait(self.lease_ms / 3000.0):
            try:
                status, answer = self.api.post(path, body, timeout=10)
            except OSError as error:
                self.log("heartbeat failed (%s); trying again" % error)
                continue
            if status == 200:
                if answer.get("cancel_requested"):
                    self.cancelled.set()
            elif status == 409:
                self.log("lease lost: %s" % answer.get("detail"))
                self.lost.set()
                return
            else:
                self.log("heartbeat answered %s: %s" % (status, answer.get("detail")))


class Failure(Exception):
    """A failed job; `retryable` says whether another attempt may help."""

    def __init__(self, message, retryable=True):
        super().__init__(message)
        self.retryable = retryable


def work(job, worker, heartbeat, command):
    """Does the job; returns its output or raises Failure."""
    if command:
        run = subprocess.run(
            command, shell=True, input=json.dumps(job), capture_output=True, text=True
        )
        if run.returncode != 0:
            raise Failure("exit %d: %s" % (run.returncode, run.stderr.strip()[-2000:]))
        try:
            return json.loads(run.stdout) if run.stdout.strip() else None
        except ValueError:
            return run.stdout
    payload = job["payload"] if isinstance(job["payload"], dict) else {}
    until = time.monotonic() + payload.get("sleep_ms", 0) / 1000.0
    while time.monotonic() < until:
        if heartbeat.cancelled.is_set():
            raise Failure("cancelled by an operator", retryable=False)
        time.sleep(min(0.05, max(0.0, until - time.monotonic())))
    if payload.get("fail"):
        raise Failure(str(payload["fail"]))
    return {"echo": payload.get("echo"), "worker": worker, "attempt": job["attempt"]}


def post_result(api, job, body, log):
    """Posts a result until the API answers; a retry reuses the key, so it applies once."""
    key = "%s-%s" % (job["id"], job["attempt"])
    delay = 0.2
    for _ in range(20):
        try:
            status, answer = api.post(
                "/v1/jobs/%s/result" % job["id"], body, {"Idempotency-Key": key}
            )
        except OSError as error:
            log("posting the result of %s failed (%s); trying again" % (job["id"], error))
        else:
            if status == 200:
                log("job %s attempt %s: %s" % (job["id"], job["attempt"], answer["job_status"]))
                return
            if status < 500:
                log("result of %s refused: %s %s" % (job["id"], answer.get("code"), answer.get("detail")))
                return
            log("posting the result of %s answered %s; trying again" % (job["id"], status))
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    log("gave up posting the result of %s; its lease will expire and it will be retried" % job["id"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", default=os.environ.get("SLUICE_API_URL", "http://127.0.0.1:7070"))
    parser.add_argument("--token", default=os.environ.get("SLUICE_TOKEN", ""))
    parser.add_argument("--queue", default="default")
    parser.add_argument("--worker", default="%s-%d" % (socket.gethostname(), os.getpid()))
    parser.add_argument("--lease-ttl-ms", type=int, default=30000)
    parser.add_argument("--wait-ms", type=int, default=10000, help="long-poll (at most 30000)")
    parser.add_argument("--max-jobs", type=int, default=0, help="exit after this many (0: never)")
    parser.add_argument("--exec", dest="command", help="a shell command that does each job")
    args = parser.parse_args()

    def log(message):
        print("[%s] %s" % (args.worker, message), file=sys.stderr, flush=True)

    stopping = threading.Event()

    def on_signal(number, _frame):
        if stopping.is_set():
            log("second signal: exiting now")
            os._exit(1)
        log("signal %d: finishing the current job, then exiting" % number)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    api = Api(args.api, args.token)
    lease_path = "/v1/queues/%s/lease" % args.queue
    ask = {"worker": args.worker, "max": 1, "wait_ms": args.wait_ms, "lease_ttl_ms": args.lease_ttl_ms}
    done = 0
    log("leasing from queue %s at %s" % (args.queue, args.api))
    while not stopping.is_set() and (args.max_jobs == 0 or done < args.max_jobs):
        try:
            status, answer = api.post(lease_path, ask, timeout=args.wait_ms / 1000.0 + 30)
        except OSError as error:
            log("lease failed (%s); trying again" % error)
            time.sleep(1)
            continue
        if status != 200:
            log("lease answered %s: %s" % (status, answer.get("detail")))
            time.sleep(1)
            continue
        for job in answer["jobs"]:
            heartbeat = Heartbeat(api, job, args.lease_ttl_ms, log)
            heartbeat.start()
            try:
                body = {"token": job["token"], "outcome": "completed",
                        "output": work(job, args.worker, heartbeat, args.command)}
            except Failure as failure:
                body = {"token": job["token"], "outcome": "failed", "error": str(failure),
                        "retryable": failure.retryable}
            except Exception as error:  # a bug in the work: report it, keep serving
                body = {"token": job["token"], "outcome": "failed",
                        "error": "%s: %s" % (type(error).__name__, error)}
            heartbeat.done.set()
            heartbeat.join()
            if heartbeat.lost.is_set():
                log("dropping the result of %s: its lease was lost" % job["id"])
            else:
                post_result(api, job, body, log)
            done += 1
    log("stopped after %d job(s)" % done)


if __name__ == "__main__":
    main()
