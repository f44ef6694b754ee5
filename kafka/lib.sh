# shellcheck shell=bash disable=SC2034  # (the variables are used by the scripts that source this file)
# Shared by kafka/local-kafka and the bin/kafka-* tool wrappers (sourced, not run).
#
# Resolves the official Apache Kafka jars from Maven Central (via kafka/pom.xml)
# into a cache outside the repository and runs Kafka classes from there with
# plain `java -cp "$libs/*"`. No Docker, no Kafka tarball download.
#
# Environment:
#   HELLO_STREAMS_CACHE          cache root (default: ~/.cache/hello-streams)
#   HELLO_STREAMS_KAFKA_VERSION  Kafka version to resolve (default: 4.4.0)
#   JAVA_HOME                    Java 17+ to use (default: java on PATH)
#   KAFKA_TOOL_OPTS              extra JVM options for the bin/ tools
#   KAFKA_TOOLS_LOG_LEVEL        log level of the bin/ tools (default: WARN)

HS_KAFKA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
HS_CACHE=${HELLO_STREAMS_CACHE:-${HOME:?HOME is not set}/.cache/hello-streams}
[[ $HS_CACHE == /* ]] || HS_CACHE=$PWD/$HS_CACHE # the nodes run in their own directories
HS_KAFKA_VERSION=${HELLO_STREAMS_KAFKA_VERSION:-4.4.0}
HS_KAFKA_HOME=$HS_CACHE/kafka-$HS_KAFKA_VERSION
HS_KAFKA_LIBS=$HS_KAFKA_HOME/libs
HS_M2=$HS_CACHE/m2
HS_KAFKA_POM=$HS_KAFKA_DIR/pom.xml
HS_BROKER_LOG4J=$HS_KAFKA_DIR/log4j2.properties
HS_TOOLS_LOG4J=$HS_KAFKA_DIR/tools-log4j2.properties

if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
  HS_JAVA=$JAVA_HOME/bin/java
else
  HS_JAVA=java
fi

hs_err() { printf '%s\n' "$*" >&2; }
hs_die() { hs_err "error: $*"; exit 1; }

# Fingerprint of what the cache must contain: pom contents + Kafka version.
hs_kafka_stamp() {
  { cat "$HS_KAFKA_POM"; echo "kafka.version=$HS_KAFKA_VERSION"; } | cksum | cut -d' ' -f1
}

hs_kafka_installed() {
  [[ -f $HS_KAFKA_HOME/.installed ]] &&
    [[ $(cat "$HS_KAFKA_HOME/.installed") == "$(hs_kafka_stamp)" ]] &&
    [[ -f $HS_KAFKA_LIBS/kafka_2.13-$HS_KAFKA_VERSION.jar ]]
}

hs_require_java() {
  command -v "$HS_JAVA" >/dev/null 2>&1 || hs_die "java not found (Java 17+ is needed; set JAVA_HOME or put java on PATH)"
  local v
  v=$("$HS_JAVA" -XshowSettings:properties -version 2>&1 | sed -n 's/^ *java\.specification\.version = //p')
  if [[ $v =~ ^[0-9]+$ ]] && ((v < 17)); then
    hs_die "Kafka $HS_KAFKA_VERSION needs Java 17+, but $HS_JAVA is Java $v"
  fi
}

# Resolve the jars into $HS_KAFKA_LIBS unless already there. Idempotent and
# safe to call concurrently (serialised with flock when available).
hs_kafka_install() {
  hs_kafka_installed && return 0
  hs_require_java
  command -v mvn >/dev/null 2>&1 || hs_die "mvn (Apache Maven) is needed to fetch the Kafka jars from Maven Central"
  mkdir -p "$HS_KAFKA_HOME"
  (
    if command -v flock >/dev/null 2>&1; then flock 9; fi
    hs_kafka_installed && exit 0
    hs_err "Resolving Apache Kafka $HS_KAFKA_VERSION jars from Maven Central into $HS_KAFKA_LIBS ..."
    local tmp=$HS_KAFKA_HOME/libs.tmp.$$ log=$HS_KAFKA_HOME/install.log
    rm -rf "$tmp"
    if ! mvn -B -q -Dstyle.color=never -f "$HS_KAFKA_POM" \
      -Dkafka.version="$HS_KAFKA_VERSION" \
      -Dmaven.repo.local="$HS_M2" \
      dependency:copy-dependencies -DoutputDirectory="$tmp" >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      rm -rf "$tmp"
      hs_die "Maven could not resolve Kafka $HS_KAFKA_VERSION (full log: $log)"
    fi
    local jar
    for jar in "kafka_2.13-$HS_KAFKA_VERSION.jar" "kafka-tools-$HS_KAFKA_VERSION.jar" "kafka-clients-$HS_KAFKA_VERSION.jar"; do
      [[ -f $tmp/$jar ]] || { rm -rf "$tmp"; hs_die "resolution finished but $jar is missing (log: $log)"; }
    done
    rm -rf "$HS_KAFKA_LIBS"
    mv "$tmp" "$HS_KAFKA_LIBS"
    hs_kafka_stamp >"$HS_KAFKA_HOME/.installed"
    hs_err "Kafka $HS_KAFKA_VERSION installed ($(find "$HS_KAFKA_LIBS" -name '*.jar' | wc -l | tr -d ' ') jars)."
  ) 9>"$HS_KAFKA_HOME/.install.lock"
}

# Build the java command line for a Kafka class into the array HS_KAFKA_CMD.
# Usage: hs_kafka_cmd [JVM options...] -- CLASS [ARGS...]
# Logging is the tools' quiet stderr configuration; KAFKA_TOOL_OPTS and
# KAFKA_OPTS are appended to the JVM options (word-split on purpose).
hs_kafka_cmd() {
  local jvm=()
  while (($#)) && [[ $1 != -- ]]; do jvm+=("$1"); shift; done
  [[ ${1:-} == -- ]] && shift
  # shellcheck disable=SC2206
  local extra=(${KAFKA_TOOL_OPTS:-} ${KAFKA_OPTS:-})
  HS_KAFKA_CMD=("$HS_JAVA" "${jvm[@]}" "${extra[@]}"
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$HS_TOOLS_LOG4J"
    -Dhello.kafka.tools.log.level="${KAFKA_TOOLS_LOG_LEVEL:-WARN}"
    -cp "$HS_KAFKA_LIBS/*" "$@")
}

# Run a Kafka class in a child process (used by local-kafka).
hs_kafka_java() {
  hs_kafka_install
  hs_kafka_cmd "$@"
  "${HS_KAFKA_CMD[@]}"
}

# Replace the current process with a Kafka command-line tool (bin/ wrappers).
# Usage: hs_kafka_tool CLASS [ARGS...]
# Short-lived admin tools start noticeably faster with the C1 JIT only and
# SerialGC; the perf-test wrappers set HS_TOOL_FAST_START=0 for the full JIT.
hs_kafka_tool() {
  local jvm=(-Xmx512m)
  if [[ ${HS_TOOL_FAST_START:-1} == 1 ]]; then
    jvm+=(-XX:+UseSerialGC -XX:TieredStopAtLevel=1)
  fi
  hs_kafka_install
  hs_kafka_cmd "${jvm[@]}" -- "$@"
  exec "${HS_KAFKA_CMD[@]}"
}
