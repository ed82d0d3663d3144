#!/usr/bin/env python3
"""Wraps a kickstart file into the JSON parameters of a base image build.

The original's example/make_parameters.py: kickstart files hold characters (newlines
first of all) that must be escaped to travel through REST or the command line.

    make_parameters.py fedora-livecd-desktop-flat.ks > f18_spin_ks.parameters.json
    imagefactory base_image --parameters f18_spin_ks.parameters.json f18_spinks.tdl

The same without this script: imagefactory base_image --file-parameter install_script
fedora-livecd-desktop-flat.ks --parameter generate_icicle false f18_spinks.tdl
"""
import json
import sys


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: make_parameters.py KICKSTART_FILE\n")
        return 2
    try:
        with open(argv[1], encoding="utf-8") as f:
            kickstart = f.read()
    except OSError as e:
        sys.stderr.write("make_parameters.py: cannot read %s: %s\n" % (argv[1], e.strerror))
        return 1
    json.dump({"install_script": kickstart, "generate_icicle": False}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
