#!/usr/bin/env bash
# Prints the folder of the third-party sample files the tests read (Access
# databases: public, but not ours to put in this repository;
# fixtures/README.md in ../shared lists them). The Korean text the tests
# need they make themselves (tests/integration/support/korean.rs, its CP949
# bytes by Python's codec):
#
#   1. $ETL_FIXTURES, when set;
#   2. else ../shared/fixtures beside the checkout ($ETL_FIXTURES_SHARED);
#   3. else a cache outside the checkout ($ETL_FIXTURES_CACHE, default
#      ~/.cache/etl/fixtures), filled from the samples' own repositories at
#      pinned commits, each file checked against its sha256 sum (as the
#      samples' own project's CI downloads them).
#
# Where none of these works (no network, a sum that differs) it prints one
# line saying what to set, and exits 1: scripts/test.sh stops before
# running anything. $ETL_FIXTURES_SOURCE replaces https://raw.githubusercontent.com
# (a mirror; the tests serve one on loopback).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)

# path in the folder | repository/commit/path under the source | sha256
FILES="access/nwind.mdb mdbtools/mdbtestdata/5ebf2d685ec628df72f4774b78abee96a866b837/data/nwind.mdb 4682dfc91be526e6508948cc53adf5c63d70fdf7f2cc1f1403ee76b66ac914b2
access/ASampleDatabase.accdb mdbtools/mdbtestdata/5ebf2d685ec628df72f4774b78abee96a866b837/data/ASampleDatabase.accdb 3ee857f318f953758970e2981ba6435d0240212365d1f2110ccd571d6db6a9fb
access/Northwind.accdb Yog964/Data_Migration_From_MAccess_To_Mysql/6eb84217b14bc6d6c31d901133054f22193e7d61/Northwind.accdb 4b19f0c079f673f90965f7e5af3cb13445dcb3a3558ac510fe9f45caf5a50fbc"

# Whether every file is in folder $1 with its sum.
complete() {
  local name url sum
  while read -r name url sum; do
    [ -f "$1/$name" ] || return 1
    [ "$(sha256sum "$1/$name" | cut -d' ' -f1)" = "$sum" ] || return 1
  done <<<"$FILES"
}

if [ -n "${ETL_FIXTURES:-}" ]; then
  if ! complete "$ETL_FIXTURES"; then
    echo "fixtures.sh: ETL_FIXTURES=$ETL_FIXTURES lacks a sample file or holds one that differs (scripts/fixtures.sh lists each with its sha256); point it at the shared samples, or unset it to fetch them" >&2
    exit 1
  fi
  echo "$ETL_FIXTURES"
  exit 0
fi
shared=${ETL_FIXTURES_SHARED:-$here/../shared/fixtures}
if complete "$shared"; then
  (cd "$shared" && pwd)
  exit 0
fi
cache=${ETL_FIXTURES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/etl/fixtures}
if complete "$cache"; then
  echo "$cache"
  exit 0
fi
source=${ETL_FIXTURES_SOURCE:-https://raw.githubusercontent.com}
echo "fixtures.sh: fetching the sample files into $cache from $source" >&2
while read -r name url sum; do
  [ -f "$cache/$name" ] && [ "$(sha256sum "$cache/$name" | cut -d' ' -f1)" = "$sum" ] && continue
  mkdir -p "$(dirname "$cache/$name")"
  tmp="$cache/$name.part"
  if ! curl -fsL --retry 2 --connect-timeout 10 -o "$tmp" "$source/$url"; then
    rm -f "$tmp"
    echo "fixtures.sh: cannot fetch $source/$url (no network?); set ETL_FIXTURES to a folder holding the shared samples (access/), or put them at $shared" >&2
    exit 1
  fi
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    rm -f "$tmp"
    echo "fixtures.sh: $source/$url has sha256 $got, not the pinned $sum; nothing is used from it: set ETL_FIXTURES to the shared samples" >&2
    exit 1
  fi
  mv "$tmp" "$cache/$name"
done <<<"$FILES"
echo "$cache"
