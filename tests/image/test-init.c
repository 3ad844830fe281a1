/* A stand-in PID 1 for the image boot tests (built with `gcc -static`, passed as --agent).
 *
 * Mounts /proc, /sys and devtmpfs, loads one module with its dependencies from modules.dep
 * (proving the shipped modules are decompressed and match the kernel), prints a marker line, the
 * kernel command line and /etc/ferry/site.conf, then powers off. Output goes to /dev/console, the
 * serial port (console=ttyS0 is last on the command line).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#define LOAD_MODULE "ntfs3" /* a catalog module with dependencies, absent from QEMU's hardware */

static char moddir[256];

static int count_ko(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    char path[1024];
    if (!d) return 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t l = strlen(e->d_name);
        if (e->d_type == DT_DIR) n += count_ko(path);
        else if (l > 3 && strcmp(e->d_name + l - 3, ".ko") == 0) n++;
    }
    closedir(d);
    return n;
}

static void cat(const char *path, const char *label) {
    char buf[4096];
    ssize_t n;
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s: none\n", label); return; }
    printf("%s:\n", label);
    fflush(stdout);
    while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, n, stdout);
    close(fd);
}

static int load_one(const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", moddir, rel);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int r = syscall(SYS_finit_module, fd, "", 0);
    int err = errno;
    close(fd);
    return (r == 0 || err == EEXIST) ? 0 : -err;
}

/* Loads NAME and the dependencies modules.dep lists for it, right to left. */
static const char *load_with_deps(const char *name) {
    static char line[8192];
    char dep[512], suffix[128];
    snprintf(dep, sizeof dep, "%s/modules.dep", moddir);
    snprintf(suffix, sizeof suffix, "/%s.ko:", name);
    FILE *f = fopen(dep, "r");
    if (!f) return "no-modules.dep";
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        size_t plen = colon - line + 1;
        if (plen >= strlen(suffix) && strncmp(colon + 1 - strlen(suffix), suffix, strlen(suffix)) == 0) { found = 1; break; }
    }
    fclose(f);
    if (!found) return "not-in-modules.dep";
    char *colon = strchr(line, ':');
    *colon = 0;
    char *deps[64];
    int n = 0;
    for (char *t = strtok(colon + 1, " \n"); t && n < 64; t = strtok(NULL, " \n")) deps[n++] = t;
    for (int i = n - 1; i >= 0; i--)
        if (load_one(deps[i]) != 0) return "dep-failed";
    return load_one(line) == 0 ? "ok" : "failed";
}

int main(void) {
    struct utsname u;
    mount("proc", "/proc", "proc", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    uname(&u);
    snprintf(moddir, sizeof moddir, "/lib/modules/%s", u.release);
    int modules = count_ko(moddir);
    const char *load = load_with_deps(LOAD_MODULE);
    struct stat st;
    printf("\nFERRY-TEST-INIT ok kernel=%s modules=%d load-%s=%s busybox=%s\n", u.release, modules, LOAD_MODULE, load,
           stat("/bin/busybox", &st) == 0 ? "yes" : "no");
    cat("/proc/cmdline", "cmdline");
    cat("/etc/ferry/site.conf", "site.conf");
    printf("ca.pem=%s\n", stat("/etc/ferry/ca.pem", &st) == 0 ? "yes" : "no");
    printf("FERRY-TEST-INIT end\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 0;
}
