#!/bin/bash
# Submit N shard tasks (K at a time) and the merge as a job that starts once all succeed:
#   IMAGES=/data/PetImages STORE=/scratch/$USER/features.h5 ./submit.sh 50 10
set -euo pipefail
cd "$(dirname "$0")"
shards=${1:-50}
at_once=${2:-10}
export IMAGES=${IMAGES:-/data/PetImages}
export STORE=${STORE:-/scratch/$USER/features.h5}
export VENV=${VENV:-$HOME/venvs/headstart}
mkdir -p logs
jid=$(sbatch --parsable --export=ALL --array=0-$((shards - 1))%"$at_once" extract.sbatch)
sbatch --parsable --export=ALL --dependency=afterok:"$jid" --job-name=merge-features \
       --output=logs/merge-%j.out --wrap 'source "$VENV/bin/activate" && merge-features "$STORE"'
echo "submitted array $jid ($shards shards, $at_once at a time) and its merge"
