/* A fake libnvidia-ml.so.1 for the tests: the NVML functions gpupool's agent calls through
 * pynvml, with the signatures and struct layouts of the real library, answering from a state
 * file the test writes (tests/agents/fake_nvml.py writes it; the format is described there).
 *
 * The state file is named by FAKE_NVML_STATE and read again whenever it changed (inode, size
 * or mtime: the writer replaces it atomically), so a test can change values between polls.
 * No FAKE_NVML_STATE, or no such file: nvmlInitWithFlags fails with "driver not loaded".
 *
 * Xid events are delivered like NVML's: once each, only those written after the event set was
 * created, oldest first, to the sets their GPU is registered in.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef int nvmlReturn_t;
#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_TIMEOUT 10
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

#define MAX_DEVICES 128
#define MAX_PROCESSES 64
#define MAX_XIDS 256
#define MAX_FAILURES 64
#define MAX_SETS 16
#define MIG_SLOTS 7
#define XID_CRITICAL_ERROR 0x8ULL

typedef struct {
    int id;
    int parent; /* -1: a physical GPU; else the id of its parent */
    int index;  /* physical GPUs: NVML's index; MIG devices: slot under the parent */
    char uuid[96];
    char name[96];
    long long util_gpu, util_mem, mem_total, mem_used, mem_reserved;
    long long power_mw, energy_mj, temp_c, ecc_corrected, ecc_uncorrected;
    long long mig_mode; /* -1: not MIG capable */
    int process_count;
    unsigned process_pid[MAX_PROCESSES];
    unsigned long long process_memory[MAX_PROCESSES];
} Device;

typedef Device *nvmlDevice_t;

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
#define NVML_MEMORY_V2 0x02000028u

typedef struct {
    unsigned int version;
    int sensorType;
    int temperature;
} nvmlTemperature_v1_t;
#define NVML_TEMPERATURE_V1 0x100000Cu

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    nvmlDevice_t device;
    unsigned long long eventType;
    unsigned long long eventData;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlEventData_t;

typedef struct {
    int used;
    long long delivered; /* the highest xid serial this set has seen */
    int registered[MAX_DEVICES];
} EventSet;

typedef struct {
    int device; /* physical id */
    unsigned long long xid;
    long long serial;
} Xid;

typedef struct {
    char function[96];
    int device; /* -1: every device */
    nvmlReturn_t code;
} Failure;

static Device devices[MAX_DEVICES];
static int device_count, physical_count;
static Xid xids[MAX_XIDS];
static int xid_count;
static Failure failures[MAX_FAILURES];
static int failure_count;
static char driver[80];
static int state_present, initialized;
static EventSet sets[MAX_SETS];
static struct stat loaded_stat;
static int ever_loaded;

static void parse_line(char *line) {
    char kind[16] = "", key[64] = "";
    int id = -1, parent = -1, offset = 0;
    long long value = 0;
    line[strcspn(line, "\n")] = '\0';
    if (sscanf(line, "%15s %n", kind, &offset) < 1) return;
    char *rest = line + offset;
    if (strcmp(kind, "driver") == 0) {
        snprintf(driver, sizeof driver, "%s", rest);
    } else if (strcmp(kind, "device") == 0) {
        char uuid[96] = "";
        if (sscanf(rest, "%d %d %95s", &id, &parent, uuid) != 3 || id != device_count ||
            id >= MAX_DEVICES)
            return;
        Device *d = &devices[id];
        memset(d, 0, sizeof *d);
        d->id = id;
        d->parent = parent;
        d->mig_mode = -1;
        snprintf(d->uuid, sizeof d->uuid, "%s", uuid);
        if (parent < 0) {
            d->index = physical_count++;
        } else {
            int slot = 0;
            for (int i = 0; i < id; i++) slot += devices[i].parent == parent;
            d->index = slot;
        }
        device_count++;
    } else if (strcmp(kind, "name") == 0) {
        if (sscanf(rest, "%d %n", &id, &offset) >= 1 && id >= 0 && id < device_count)
            snprintf(devices[id].name, sizeof devices[id].name, "%s", rest + offset);
    } else if (strcmp(kind, "set") == 0) {
        if (sscanf(rest, "%d %63s %lld", &id, key, &value) != 3 || id < 0 || id >= device_count)
            return;
        Device *d = &devices[id];
        if (strcmp(key, "util_gpu") == 0) d->util_gpu = value;
        else if (strcmp(key, "util_mem") == 0) d->util_mem = value;
        else if (strcmp(key, "mem_total") == 0) d->mem_total = value;
        else if (strcmp(key, "mem_used") == 0) d->mem_used = value;
        else if (strcmp(key, "mem_reserved") == 0) d->mem_reserved = value;
        else if (strcmp(key, "power_mw") == 0) d->power_mw = value;
        else if (strcmp(key, "energy_mj") == 0) d->energy_mj = value;
        else if (strcmp(key, "temp_c") == 0) d->temp_c = value;
        else if (strcmp(key, "ecc_corrected") == 0) d->ecc_corrected = value;
        else if (strcmp(key, "ecc_uncorrected") == 0) d->ecc_uncorrected = value;
        else if (strcmp(key, "mig_mode") == 0) d->mig_mode = value;
    } else if (strcmp(kind, "process") == 0) {
        unsigned pid = 0;
        unsigned long long memory = 0;
        if (sscanf(rest, "%d %u %llu", &id, &pid, &memory) != 3 || id < 0 || id >= device_count)
            return;
        Device *d = &devices[id];
        if (d->process_count < MAX_PROCESSES) {
            d->process_pid[d->process_count] = pid;
            d->process_memory[d->process_count++] = memory;
        }
    } else if (strcmp(kind, "xid") == 0) {
        Xid x;
        if (sscanf(rest, "%d %llu %lld", &x.device, &x.xid, &x.serial) == 3 &&
            xid_count < MAX_XIDS)
            xids[xid_count++] = x;
    } else if (strcmp(kind, "fail") == 0) {
        Failure f;
        if (sscanf(rest, "%95s %d %d", f.function, &f.code, &f.device) == 3 &&
            failure_count < MAX_FAILURES)
            failures[failure_count++] = f;
    }
}

/* Read the state file again if it changed since it was last read. */
static void reload(void) {
    const char *path = getenv("FAKE_NVML_STATE");
    struct stat now;
    if (path == NULL || stat(path, &now) != 0) {
        state_present = 0;
        return;
    }
    if (ever_loaded && now.st_ino == loaded_stat.st_ino && now.st_size == loaded_stat.st_size &&
        now.st_mtim.tv_sec == loaded_stat.st_mtim.tv_sec &&
        now.st_mtim.tv_nsec == loaded_stat.st_mtim.tv_nsec)
        return;
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        state_present = 0;
        return;
    }
    device_count = physical_count = xid_count = failure_count = 0;
    driver[0] = '\0';
    char line[512];
    while (fgets(line, sizeof line, file) != NULL) parse_line(line);
    fclose(file);
    loaded_stat = now;
    ever_loaded = 1;
    state_present = 1;
}

/* The failure the test asked for from this function on this device, or NVML_SUCCESS. */
static nvmlReturn_t failure(const char *function, const Device *device) {
    for (int i = 0; i < failure_count; i++) {
        if (strcmp(failures[i].function, function) == 0 &&
            (failures[i].device < 0 || (device != NULL && failures[i].device == device->id)))
            return failures[i].code;
    }
    return NVML_SUCCESS;
}

static int valid(const Device *device) {
    return device != NULL && device >= devices && device < devices + device_count;
}

/* The checks every device function starts with. */
#define ENTER_DEVICE(function, device)                      \
    reload();                                               \
    if (!initialized) return NVML_ERROR_UNINITIALIZED;      \
    if (!valid(device)) return NVML_ERROR_INVALID_ARGUMENT; \
    nvmlReturn_t injected = failure(function, device);      \
    if (injected != NVML_SUCCESS) return injected;

#define ENTER(function)                                \
    reload();                                          \
    if (!initialized) return NVML_ERROR_UNINITIALIZED; \
    nvmlReturn_t injected = failure(function, NULL);   \
    if (injected != NVML_SUCCESS) return injected;

static int is_mig(const Device *d) { return d->parent >= 0; }

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    reload();
    if (!state_present) return NVML_ERROR_DRIVER_NOT_LOADED;
    nvmlReturn_t injected = failure("nvmlInitWithFlags", NULL);
    if (injected != NVML_SUCCESS) return injected;
    initialized++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case 0: return "Success";
    case 1: return "Uninitialized";
    case 2: return "Invalid Argument";
    case 3: return "Not Supported";
    case 4: return "Insufficient Permissions";
    case 6: return "Not Found";
    case 7: return "Insufficient Size";
    case 9: return "Driver Not Loaded";
    case 10: return "Timeout";
    case 13: return "Function Not Found";
    case 15: return "GPU is lost";
    case 25: return "Argument version mismatch";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    ENTER("nvmlSystemGetDriverVersion");
    if (strlen(driver) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(version, driver);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    ENTER("nvmlDeviceGetCount_v2");
    *count = (unsigned)physical_count;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    ENTER("nvmlDeviceGetHandleByIndex_v2");
    for (int i = 0; i < device_count; i++) {
        if (!is_mig(&devices[i]) && devices[i].index == (int)index) {
            *device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_INVALID_ARGUMENT;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    ENTER_DEVICE("nvmlDeviceGetIndex", device);
    *index = (unsigned)(is_mig(device) ? devices[device->parent].index : device->index);
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_text(const char *text, char *out, unsigned int length) {
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, text);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    ENTER_DEVICE("nvmlDeviceGetUUID", device);
    return copy_text(device->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    ENTER_DEVICE("nvmlDeviceGetName", device);
    return copy_text(device->name, name, length);
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *util) {
    ENTER_DEVICE("nvmlDeviceGetUtilizationRates", device);
    /* Like NVML: not per MIG device, and not on a GPU in MIG mode. */
    if (is_mig(device) || device->mig_mode == 1) return NVML_ERROR_NOT_SUPPORTED;
    util->gpu = (unsigned)device->util_gpu;
    util->memory = (unsigned)device->util_mem;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    ENTER_DEVICE("nvmlDeviceGetMemoryInfo", device);
    memory->total = (unsigned long long)device->mem_total;
    memory->used = (unsigned long long)(device->mem_used + device->mem_reserved);
    memory->free = memory->total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    ENTER_DEVICE("nvmlDeviceGetMemoryInfo_v2", device);
    if (memory->version != NVML_MEMORY_V2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory->total = (unsigned long long)device->mem_total;
    memory->reserved = (unsigned long long)device->mem_reserved;
    memory->used = (unsigned long long)device->mem_used;
    memory->free = memory->total - memory->reserved - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power_mw) {
    ENTER_DEVICE("nvmlDeviceGetPowerUsage", device);
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    *power_mw = (unsigned)device->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device,
                                                 unsigned long long *energy_mj) {
    ENTER_DEVICE("nvmlDeviceGetTotalEnergyConsumption", device);
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    *energy_mj = (unsigned long long)device->energy_mj;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, int sensor, unsigned int *temp) {
    ENTER_DEVICE("nvmlDeviceGetTemperature", device);
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    *temp = (unsigned)device->temp_c;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temp) {
    ENTER_DEVICE("nvmlDeviceGetTemperatureV", device);
    if (temp->version != NVML_TEMPERATURE_V1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    if (temp->sensorType != 0) return NVML_ERROR_INVALID_ARGUMENT;
    temp->temperature = (int)device->temp_c;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, int error_type, int counter_type,
                                         unsigned long long *count) {
    ENTER_DEVICE("nvmlDeviceGetTotalEccErrors", device);
    (void)counter_type; /* volatile and aggregate are the same here */
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    if (error_type == 0) *count = (unsigned long long)device->ecc_corrected;
    else if (error_type == 1) *count = (unsigned long long)device->ecc_uncorrected;
    else return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_SUCCESS;
}

/* A MIG device's processes are its own; a GPU in MIG mode lists all of its devices'. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    ENTER_DEVICE("nvmlDeviceGetComputeRunningProcesses_v3", device);
    unsigned total = 0;
    const Device *sources[MIG_SLOTS + 1];
    int source_count = 0;
    sources[source_count++] = device;
    if (!is_mig(device)) {
        for (int i = 0; i < device_count && source_count <= MIG_SLOTS; i++)
            if (devices[i].parent == device->id) sources[source_count++] = &devices[i];
    }
    for (int s = 0; s < source_count; s++) total += (unsigned)sources[s]->process_count;
    if (infos == NULL || *count < total) {
        *count = total;
        return total == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    unsigned n = 0;
    for (int s = 0; s < source_count; s++) {
        const Device *d = sources[s];
        for (int p = 0; p < d->process_count; p++) {
            infos[n].pid = d->process_pid[p];
            infos[n].usedGpuMemory = d->process_memory[p];
            infos[n].gpuInstanceId = is_mig(d) ? (unsigned)d->index : 0xFFFFFFFFu;
            infos[n].computeInstanceId = is_mig(d) ? 0u : 0xFFFFFFFFu;
            n++;
        }
    }
    *count = n;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *current,
                                  unsigned int *pending) {
    ENTER_DEVICE("nvmlDeviceGetMigMode", device);
    if (is_mig(device) || device->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *current = *pending = (unsigned)device->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t device, unsigned int *is_mig_device) {
    ENTER_DEVICE("nvmlDeviceIsMigDeviceHandle", device);
    *is_mig_device = (unsigned)is_mig(device);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t device, unsigned int *count) {
    ENTER_DEVICE("nvmlDeviceGetMaxMigDeviceCount", device);
    if (is_mig(device) || device->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *count = MIG_SLOTS;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t device, unsigned int index,
                                                 nvmlDevice_t *mig_device) {
    ENTER_DEVICE("nvmlDeviceGetMigDeviceHandleByIndex", device);
    if (is_mig(device) || device->mig_mode != 1) return NVML_ERROR_INVALID_ARGUMENT;
    for (int i = 0; i < device_count; i++) {
        if (devices[i].parent == device->id && devices[i].index == (int)index) {
            *mig_device = &devices[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t mig_device,
                                                          nvmlDevice_t *device) {
    ENTER_DEVICE("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", mig_device);
    if (!is_mig(mig_device)) return NVML_ERROR_INVALID_ARGUMENT;
    *device = &devices[mig_device->parent];
    return NVML_SUCCESS;
}

static long long highest_xid_serial(void) {
    long long highest = 0;
    for (int i = 0; i < xid_count; i++)
        if (xids[i].serial > highest) highest = xids[i].serial;
    return highest;
}

nvmlReturn_t nvmlEventSetCreate(EventSet **set) {
    ENTER("nvmlEventSetCreate");
    for (int i = 0; i < MAX_SETS; i++) {
        if (!sets[i].used) {
            memset(&sets[i], 0, sizeof sets[i]);
            sets[i].used = 1;
            sets[i].delivered = highest_xid_serial(); /* events from now on, like NVML */
            *set = &sets[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_INSUFFICIENT_SIZE;
}

nvmlReturn_t nvmlDeviceRegisterEvents(nvmlDevice_t device, unsigned long long types,
                                      EventSet *set) {
    ENTER_DEVICE("nvmlDeviceRegisterEvents", device);
    if (set == NULL || !set->used) return NVML_ERROR_INVALID_ARGUMENT;
    if (is_mig(device)) return NVML_ERROR_NOT_SUPPORTED;
    if (types & XID_CRITICAL_ERROR) set->registered[device->id] = 1;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetWait_v2(EventSet *set, nvmlEventData_t *data, unsigned int timeout_ms) {
    (void)timeout_ms; /* never blocks: a test delivers events by writing the state */
    ENTER("nvmlEventSetWait_v2");
    if (set == NULL || !set->used) return NVML_ERROR_INVALID_ARGUMENT;
    const Xid *next = NULL;
    for (int i = 0; i < xid_count; i++) {
        const Xid *x = &xids[i];
        if (x->serial > set->delivered && x->device >= 0 && x->device < device_count &&
            set->registered[x->device] && (next == NULL || x->serial < next->serial))
            next = x;
    }
    if (next == NULL) return NVML_ERROR_TIMEOUT;
    set->delivered = next->serial;
    data->device = &devices[next->device];
    data->eventType = XID_CRITICAL_ERROR;
    data->eventData = next->xid;
    data->gpuInstanceId = 0xFFFFFFFFu;
    data->computeInstanceId = 0xFFFFFFFFu;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlEventSetFree(EventSet *set) {
    reload();
    if (set == NULL || !set->used) return NVML_ERROR_INVALID_ARGUMENT;
    set->used = 0;
    return NVML_SUCCESS;
}
