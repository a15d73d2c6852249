#!/usr/bin/env bash
# Installs the C API of chatglm-rs under a prefix:
#
#   PREFIX/include/chatglm.h
#   PREFIX/lib/libchatglm.a
#   PREFIX/lib/libchatglm.so.X.Y.Z, libchatglm.so.X -> it, libchatglm.so -> libchatglm.so.X
#       (macOS: libchatglm.X.dylib, libchatglm.dylib -> it)
#   PREFIX/lib/pkgconfig/chatglm.pc                 `pkg-config --cflags --libs chatglm`
#   PREFIX/lib/cmake/chatglm/chatglmConfig.cmake    `find_package(chatglm)`: the targets
#   PREFIX/lib/cmake/chatglm/chatglmConfigVersion.cmake   chatglm::chatglm, chatglm::chatglm_static
#
# Usage: tools/install.sh --prefix DIR [--from DIR]
#   --prefix DIR   where to install (for example /usr/local, or $HOME/.local)
#   --from DIR     take the built libraries from DIR instead of running
#                  `cargo build --release --lib` and taking them from target/release
#
# The version comes from the header's CHATGLM_VERSION_* macros (which come from Cargo.toml).
# The CMake files find the prefix from where they are (the tree can be moved); chatglm.pc
# names it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

prefix="" from=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
        --prefix=*) prefix="${1#--prefix=}"; shift ;;
        --from) from="${2:?--from needs a directory}"; shift 2 ;;
        --from=*) from="${1#--from=}"; shift ;;
        -h|--help) sed -n '2,/^set -e/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$prefix" ]; then
    echo "install.sh: --prefix DIR is required (see --help)" >&2
    exit 2
fi

if [ -z "$from" ]; then
    (cd "$root" && cargo build --release --lib -p chatglm)
    from="$root/target/release"
fi

header="$root/include/chatglm.h"
version_part() {
    sed -n "s/^#define CHATGLM_VERSION_$1 \([0-9][0-9]*\)\$/\1/p" "$header"
}
major="$(version_part MAJOR)" minor="$(version_part MINOR)" patch="$(version_part PATCH)"
if [ -z "$major" ] || [ -z "$minor" ] || [ -z "$patch" ]; then
    echo "install.sh: no CHATGLM_VERSION_* macros in $header" >&2
    exit 1
fi
version="$major.$minor.$patch"

case "$(uname -s)" in
    Darwin)
        built="libchatglm.dylib"
        real="libchatglm.$major.dylib"
        links=("libchatglm.dylib:$real")
        ;;
    *)
        built="libchatglm.so"
        real="libchatglm.so.$version"
        links=("libchatglm.so.$major:$real" "libchatglm.so:libchatglm.so.$major")
        ;;
esac
for f in libchatglm.a "$built"; do
    if [ ! -f "$from/$f" ]; then
        echo "install.sh: $from/$f not found (build with cargo build --release first)" >&2
        exit 1
    fi
done

mkdir -p "$prefix"
prefix="$(cd "$prefix" && pwd)"
lib="$prefix/lib"
mkdir -p "$prefix/include" "$lib/pkgconfig" "$lib/cmake/chatglm"

install -m 644 "$header" "$prefix/include/chatglm.h"
install -m 644 "$from/libchatglm.a" "$lib/libchatglm.a"
install -m 755 "$from/$built" "$lib/$real"
for pair in "${links[@]}"; do
    ln -sfn "${pair#*:}" "$lib/${pair%%:*}"
done
if [ "$(uname -s)" = Darwin ] && command -v install_name_tool >/dev/null; then
    install_name_tool -id "$lib/$real" "$lib/$real"
fi

# What a static link needs besides the archive (glibc >= 2.34; see the README).
static_libs="-lpthread -ldl -lm"

cat >"$lib/pkgconfig/chatglm.pc" <<EOF
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: chatglm
Description: ChatGLM2/ChatGLM3 inference on CPU (the C API of chatglm-rs)
Version: $version
Libs: -L\${libdir} -lchatglm
Libs.private: $static_libs
Cflags: -I\${includedir}
EOF

cat >"$lib/cmake/chatglm/chatglmConfig.cmake" <<EOF
# chatglm $version, installed by tools/install.sh of chatglm-rs.
# Targets: chatglm::chatglm (shared library), chatglm::chatglm_static (static library).
include(CMakeFindDependencyMacro)
find_dependency(Threads)
get_filename_component(_chatglm_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
if(NOT TARGET chatglm::chatglm)
    add_library(chatglm::chatglm SHARED IMPORTED)
    set_target_properties(chatglm::chatglm PROPERTIES
        IMPORTED_LOCATION "\${_chatglm_prefix}/lib/$real"
        IMPORTED_SONAME "$(basename "${links[0]%%:*}")"
        INTERFACE_INCLUDE_DIRECTORIES "\${_chatglm_prefix}/include")
    add_library(chatglm::chatglm_static STATIC IMPORTED)
    set_target_properties(chatglm::chatglm_static PROPERTIES
        IMPORTED_LOCATION "\${_chatglm_prefix}/lib/libchatglm.a"
        INTERFACE_INCLUDE_DIRECTORIES "\${_chatglm_prefix}/include"
        INTERFACE_LINK_LIBRARIES "Threads::Threads;\${CMAKE_DL_LIBS};m")
endif()
unset(_chatglm_prefix)
set(chatglm_FOUND TRUE)
EOF

cat >"$lib/cmake/chatglm/chatglmConfigVersion.cmake" <<EOF
# Compatible: the same major version, and at least the version asked for.
set(PACKAGE_VERSION "$version")
if(NOT PACKAGE_FIND_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
elseif(PACKAGE_FIND_VERSION_MAJOR STREQUAL "$major"
   AND NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
        set(PACKAGE_VERSION_EXACT TRUE)
    endif()
else()
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
EOF

echo "installed chatglm $version under $prefix"
