"""A RunPod datacenter's S3 endpoint, stood in for by a real moto server (a subprocess) that checks keys.

moto enforces signatures once its first INITIAL_NO_AUTH_ACTION_COUNT requests are spent; those set up the
volumes' buckets and one IAM user whose key is then the only one accepted. So a wrong key or secret is
refused the way a real endpoint refuses it. A RunPod S3 key is valid in every datacenter, but each moto server
makes its own keys; so only a datacenter made with `check_keys=True` checks them (the others accept any key).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import boto3
from botocore.config import Config

from tests.support.comfyui import free_port

POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}


class MotoDatacenter:
    def __init__(self, name: str, volumes: list[str], log: Path, check_keys: bool = True):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "wb")
        moto = Path(sys.executable).with_name("moto_server")
        env = {k: v for k, v in os.environ.items() if k != "INITIAL_NO_AUTH_ACTION_COUNT"}
        if check_keys:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(len(volumes) + 3)
        self.proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(self.port)], stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 60
        while True:  # wait by connecting: an HTTP request would spend one unauthenticated action
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"moto server for {name} did not start") from None
                time.sleep(0.1)
        setup = dict(endpoint_url=self.url, aws_access_key_id="setup", aws_secret_access_key="setup",
                     region_name="us-east-1")
        s3 = boto3.client("s3", **setup)
        for v in volumes:
            s3.create_bucket(Bucket=v)
        if not check_keys:
            self.key, self.secret = "any-key", "any-secret"
            return
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="runpod-user")
        iam.put_user_policy(UserName="runpod-user", PolicyName="volumes", PolicyDocument=json.dumps(POLICY))
        key = iam.create_access_key(UserName="runpod-user")["AccessKey"]
        self.key, self.secret = key["AccessKeyId"], key["SecretAccessKey"]

    def client(self, endpoint: str | None = None):
        return boto3.client("s3", endpoint_url=endpoint or self.url, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name=self.name,
                            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._log.close()
