/* kiln version, set by the build. */
#ifndef KILN_VERSION_H
#define KILN_VERSION_H

/* The version string, e.g. "0.1.0". Static storage. */
const char *kiln_version(void);

#endif
