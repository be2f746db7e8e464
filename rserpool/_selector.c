/* Placeholder replaced by the C selector (work in progress). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_selector", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__selector(void) { return PyModule_Create(&mod); }
