#!/bin/sh
# Runs inside the container (any of realwork.sh's peers), mounted at /bench with its fifos:
#
#   sh /bench/realwork-task.sh TASK SIZE
#
# 1. prep_TASK: makes the task's input (untimed; it lands in the container's writable layer,
#    as a checkout or a build context would);
# 2. "ready" on /bench/ready, then waits for a line on /bench/go (the driver resets the union's
#    request counters in between);
# 3. the clock (`date +%s.%N`), run_TASK, the clock again; "T0 T1" on /bench/result;
# 4. waits for a line on /bench/end (the driver reads the counters while the union is up).
# A failing task exits non-zero before writing a result, and the driver records the failure.
# Dash, not bash: the root is Debian's and /bin/sh is what every peer has.
set -eu

task=$1 size=$2

# Text files of about 1-3 KiB in directories of 50: git's and make's input.
gen_files() { # gen_files DIR N EXT
    python3 - "$@" <<'EOF'
import os, sys
d, n, ext = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(n):
    sub = os.path.join(d, f"d{i // 50:03d}")
    os.makedirs(sub, exist_ok=True)
    with open(os.path.join(sub, f"f{i:05d}.{ext}"), "w") as f:
        f.write(f"/* file {i} */\n" + "".join(f"int v{i}_{k} = {k};\n" for k in range(40 + i % 80)))
EOF
}

prep_git() { gen_files /root/src "$size" txt; }
run_git() {
    cd /root/src
    git init -q
    git add -A
    git -c user.name=bench -c user.email=bench@example.org commit -q -m import
    git gc -q
    git status --porcelain >/dev/null
    git fsck --no-progress >/dev/null
}

prep_dpkg() { :; }
run_dpkg() {
    dpkg -i /debs/*.deb >/dev/null
    # --verify exits 1 when it reports a difference (none expected); anything else is a failure.
    dpkg --verify >/tmp/verify.out || [ $? -eq 1 ]
}

prep_rmdoc() { :; }
run_rmdoc() { rm -rf /usr/share/doc /usr/share/locale; }

# SIZE is the directory to compile, under the stdlib.
prep_compileall() { :; }
run_compileall() { python3 -m compileall -f -q "/usr/lib/python3.11/$size" >/dev/null; }

prep_files() { mkdir /root/small; }
run_files() {
    python3 - "$size" <<'EOF'
import os, sys
n = int(sys.argv[1])
os.chdir("/root/small")
names = [f"f{i:05d}" for i in range(n)]
for name in names:
    with open(name, "w") as f:
        f.write("x" * 100)
for name in names:
    os.stat(name)
for name in names:
    os.unlink(name)
EOF
}

# SIZE C files of a few functions each, and a Makefile that links them into one program.
prep_make() {
    mkdir -p /root/build
    python3 - "$size" <<'EOF'
import sys
n = int(sys.argv[1])
for i in range(n):
    with open(f"/root/build/m{i:03d}.c", "w") as f:
        f.write("#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\n")
        for k in range(8):
            f.write(f"int m{i}_{k}(const char *s) {{ int h = {k}; while (*s) h = h * 31 + *s++;"
                    f" return h ^ (int)strlen(s); }}\n")
    with open("/root/build/main.c", "w") as f:
        f.write("int main(void) { return 0; }\n")
objs = " ".join(f"m{i:03d}.o" for i in range(n))
with open("/root/build/Makefile", "w") as f:
    f.write(f"prog: main.o {objs}\n\tcc -o $@ $^\n%.o: %.c\n\tcc -O2 -c -o $@ $<\n")
EOF
}
run_make() { make -s -j4 -C /root/build >/dev/null; }

"prep_$task"
echo ready >/bench/ready
read -r _ </bench/go
t0=$(date +%s.%N)
"run_$task"
t1=$(date +%s.%N)
echo "$t0 $t1" >/bench/result
read -r _ </bench/end
