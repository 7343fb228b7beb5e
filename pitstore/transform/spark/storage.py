"""Files for the Spark engine on any Hadoop-compatible path (local, ``s3a://``, ``hdfs://``).

Local paths use the standard library (``os.replace`` is atomic on POSIX); every
other scheme goes through the Hadoop ``FileSystem`` API of the running Spark
session, configured the usual way (``spark.hadoop.fs.s3a.*``, core-site.xml).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse


def is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(uri: str) -> Path:
    return Path(urlparse(uri).path if uri.startswith("file:") else uri)


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


class Store:
    """The handful of file operations the job needs, for one path scheme."""

    def __init__(self, spark: Any) -> None:
        self._spark = spark

    # -- Hadoop FileSystem plumbing --------------------------------------------
    def _fs(self, uri: str) -> tuple[Any, Any]:
        jvm = self._spark._jvm
        path = jvm.org.apache.hadoop.fs.Path(uri)
        return path.getFileSystem(self._spark._jsc.hadoopConfiguration()), path

    def _hpath(self, uri: str) -> Any:
        return self._spark._jvm.org.apache.hadoop.fs.Path(uri)

    # -- operations --------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        if is_local(uri):
            return local_path(uri).exists()
        fs, path = self._fs(uri)
        return bool(fs.exists(path))

    def list_names(self, uri: str) -> list[str]:
        """File and directory names directly under ``uri`` (empty if it does not exist)."""
        if is_local(uri):
            p = local_path(uri)
            return sorted(c.name for c in p.iterdir()) if p.is_dir() else []
        fs, path = self._fs(uri)
        if not fs.exists(path):
            return []
        return sorted(str(s.getPath().getName()) for s in fs.listStatus(path))

    def read_text(self, uri: str) -> str:
        if is_local(uri):
            return local_path(uri).read_text(encoding="utf-8")
        fs, path = self._fs(uri)
        stream = fs.open(path)
        try:
            jvm = self._spark._jvm
            return str(
                jvm.org.apache.commons.io.IOUtils.toString(
                    stream, jvm.java.nio.charset.StandardCharsets.UTF_8
                )
            )
        finally:
            stream.close()

    def write_text(self, uri: str, text: str) -> None:
        """Write a small file atomically (temp name in the same directory, then rename)."""
        self.write_bytes(uri, text.encode("utf-8"))

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write a file atomically (temp name in the same directory, then rename)."""
        name = uri.rstrip("/").rsplit("/", 1)[-1]
        tmp = join(uri.rsplit("/", 1)[0], f".{name}.tmp-{os.getpid()}")
        if is_local(uri):
            target = local_path(uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            local_path(tmp).write_bytes(data)
            os.replace(local_path(tmp), target)
            return
        fs, path = self._fs(tmp)
        out = fs.create(path, True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()
        self.replace(tmp, uri)

    def replace(self, src: str, dst: str) -> None:
        """Move ``src`` to ``dst``, replacing it: atomic locally and on HDFS's rename;
        on object stores (s3a) the new object appears whole, but a replaced one is
        briefly absent."""
        if is_local(src):
            local_path(dst).parent.mkdir(parents=True, exist_ok=True)
            os.replace(local_path(src), local_path(dst))
            return
        fs, s = self._fs(src)
        d = self._hpath(dst)
        fs.mkdirs(d.getParent())
        if fs.exists(d):
            fs.delete(d, False)
        if not fs.rename(s, d):
            raise OSError(f"could not rename {src} to {dst}")

    def parquet_rows(self, uri: str) -> int:
        """Rows in a parquet file, from its footer (no scan)."""
        if is_local(uri):
            import pyarrow.parquet as pq

            return int(pq.read_metadata(local_path(uri)).num_rows)
        return int(self._spark.read.parquet(uri).count())

    def delete(self, uri: str) -> None:
        if is_local(uri):
            p = local_path(uri)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            return
        fs, path = self._fs(uri)
        if fs.exists(path):
            fs.delete(path, True)
