#!/usr/bin/env python3
"""Makes the JSON parameters of an IndirectionCloud target image build.

The original's example/make_target_parameters.py: the partial TDL of the utility tasks and
the UUID of the utility image, plus (new) any further NAME=VALUE parameters of the plugin
(input_image_device=vdc, results_location=/results/out.iso, utility_cpus=2, ...).

    make_target_parameters.py utility_tasks.tdl UTILITY_IMAGE_UUID > target_parameters.json
    imagefactory target_image --parameters target_parameters.json --id INPUT_IMAGE_UUID indirection

The same without this script: imagefactory target_image --parameter utility_image UUID
--file-parameter utility_customizations utility_tasks.tdl --id INPUT_IMAGE_UUID indirection
"""
import json
import sys


def main(argv):
    if len(argv) < 3:
        sys.stderr.write("usage: make_target_parameters.py UTILITY_TASKS_TDL UTILITY_IMAGE_UUID [NAME=VALUE]...\n")
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            tasks = f.read()
    except OSError as e:
        sys.stderr.write("make_target_parameters.py: cannot read %s: %s\n" % (argv[1], e.strerror))
        return 1
    parameters = {"utility_image": argv[2], "utility_customizations": tasks}
    for extra in argv[3:]:
        name, sep, value = extra.partition("=")
        if not sep or not name:
            sys.stderr.write("make_target_parameters.py: %r is not NAME=VALUE\n" % extra)
            return 2
        parameters[name] = value
    json.dump(parameters, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
