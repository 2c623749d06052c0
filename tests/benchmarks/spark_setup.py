"""What the Spark peer needs, installed on first use: a venv with PySpark and the connector jars.

PySpark ships Spark's own jars; the Kafka source and the Delta sink are separate Maven artifacts.
`ensure_spark_jars()` resolves them with their runtime dependencies through Maven (a throwaway POM
and `maven-dependency-plugin:copy-dependencies`) into a cache directory,

    ~/.cache/waxlake/spark-<spark>-delta-<delta>/jars   ($XDG_CACHE_HOME respected)

and drops every jar whose artifact PySpark already ships (Scala, Hadoop, slf4j, lz4, snappy, ...:
Spark's own copies win, as they would with `--packages` on a Spark distribution). The peer passes
what is left as `spark.jars` (local paths), so it never resolves anything at run time.

Versions: Delta 4.0.x is the line built for Spark 4.0 and the last one published as plain
`delta-spark_2.13` (4.1+ carry a Spark suffix, `delta-spark_4.1_2.13`); 4.0.0 is the 4.0.x patch
level whose Kafka artifacts all resolve here. Spark 4 needs Java 17 or newer.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPARK_VERSION = "4.0.0"
DELTA_VERSION = "4.0.0"
SCALA = "2.13"
ARTIFACTS = (
    ("org.apache.spark", f"spark-sql-kafka-0-10_{SCALA}", SPARK_VERSION),
    ("io.delta", f"delta-spark_{SCALA}", DELTA_VERSION),
)
SPARK_VENV = HERE / ".venv-spark"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>waxlake.bench</groupId>
  <artifactId>spark-peer-jars</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""
# Spark's parent POM lists a second repository (a mirror of Central) ahead of Central; where that
# host is unreachable Maven fails on it instead of moving on. Pointing every repository except
# Central at an empty local directory makes Maven skip them (what they serve, Central serves).
_SETTINGS = """<settings>
  <mirrors>
    <mirror><id>central-only</id><mirrorOf>*,!central</mirrorOf><url>{url}</url></mirror>
  </mirrors>
</settings>
"""


def spark_python() -> Path:
    return SPARK_VENV / "bin" / "python"


def ensure_spark_venv() -> None:
    """Create tests/benchmarks/.venv-spark with PySpark (and py4j, its only dependency)."""
    python = spark_python()
    check = [str(python), "-c", f"import pyspark; assert pyspark.__version__ == {SPARK_VERSION!r}"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return
    print(f"creating {SPARK_VENV} (pyspark {SPARK_VERSION}) ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(SPARK_VENV)], check=True)
    install = [str(python), "-m", "pip", "install", "--quiet", f"pyspark=={SPARK_VERSION}"]
    subprocess.run(install, check=True)


def cache_dir() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "waxlake" / f"spark-{SPARK_VERSION}-delta-{DELTA_VERSION}"


def _artifact_id(jar: str) -> str:
    """`kafka-clients-3.9.0.jar` -> `kafka-clients` (the name up to the version)."""
    match = re.match(r"(.+?)-\d[^-]*(-[A-Za-z0-9.]+)?\.jar$", jar)
    return match.group(1) if match else jar


def pyspark_jar_dir() -> Path:
    code = "import pyspark, os; print(os.path.join(os.path.dirname(pyspark.__file__), 'jars'))"
    out = subprocess.run([str(spark_python()), "-c", code], capture_output=True, text=True)
    out.check_returncode()
    return Path(out.stdout.strip())


def ensure_spark_jars() -> list[Path]:
    """The Kafka source and Delta jars (with dependencies PySpark lacks), resolved once."""
    jars_dir = cache_dir() / "jars"
    if jars_dir.is_dir() and any(jars_dir.glob("*.jar")):
        return sorted(jars_dir.glob("*.jar"))
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeError("Maven (mvn) is needed once to resolve the Spark peer's jars")
    print(f"resolving the Spark peer's jars into {jars_dir} (Maven) ...", flush=True)
    shipped = {_artifact_id(p.name) for p in pyspark_jar_dir().glob("*.jar")}
    jars_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=jars_dir.parent) as tmp:
        work = Path(tmp)
        (work / "empty-repo").mkdir()
        deps = "\n".join(
            f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
            f"<version>{v}</version></dependency>"
            for g, a, v in ARTIFACTS
        )
        (work / "pom.xml").write_text(_POM.format(dependencies=deps))
        (work / "settings.xml").write_text(_SETTINGS.format(url=(work / "empty-repo").as_uri()))
        argv = [
            mvn,
            "-q",
            "-B",
            "-s",
            str(work / "settings.xml"),
            "-f",
            str(work / "pom.xml"),
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'all'}",
        ]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Maven failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        staged = work / "jars"
        staged.mkdir()
        for jar in (work / "all").glob("*.jar"):
            if _artifact_id(jar.name) not in shipped:
                shutil.move(jar, staged / jar.name)
        shutil.rmtree(jars_dir, ignore_errors=True)
        staged.rename(jars_dir)
    return sorted(jars_dir.glob("*.jar"))


def java_major() -> int | None:
    """Major version of the `java` Spark will launch ($JAVA_HOME/bin/java, else PATH)."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def ensure_spark_peer() -> list[Path]:
    """Venv, jars and a Java 17+ check; returns the jars for `spark.jars`."""
    major = java_major()
    if major is None or major < 17:
        raise RuntimeError(f"Spark {SPARK_VERSION} needs Java 17+, found {major}: set JAVA_HOME")
    ensure_spark_venv()
    return ensure_spark_jars()


SHORT_HINT = (
    "Spark ends an availableNow run at the high watermarks the broker reports; "
    "Tansu's stop short of the last batch"
)


def peer_command(
    bootstrap: str, topic: str, table: Path, checkpoint: Path, report: Path
) -> list[str]:
    """argv of the Spark peer (peer_spark.py in the Spark venv), after `ensure_spark_peer()`."""
    return [
        str(spark_python()),
        str(HERE / "peer_spark.py"),
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--table",
        str(table),
        "--checkpoint",
        str(checkpoint),
        "--jars",
        ",".join(str(j) for j in ensure_spark_jars()),
        "--report",
        str(report),
    ]


def versions() -> dict[str, object]:
    """What the Spark peer runs with, for the benchmark's JSON."""
    return {
        "pyspark": SPARK_VERSION,
        "jars": [j.name for j in ensure_spark_jars()],
        "java": java_major(),
    }
