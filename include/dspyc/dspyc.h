/* Umbrella header for libdspyc: include this one. */
#ifndef DSPYC_DSPYC_H
#define DSPYC_DSPYC_H

#include <dspyc/common.h>
#include <dspyc/signature.h>
#include <dspyc/adapter.h>
#include <dspyc/lm.h>
#include <dspyc/module.h>
#include <dspyc/program.h>
#include <dspyc/hist.h>
#include <dspyc/proc.h>
#include <dspyc/cache.h>
#include <dspyc/python.h>
#include <dspyc/loadgen.h>
#include <dspyc/timeseries.h>
#include <dspyc/metrics.h>
#include <dspyc/sim.h>
#include <dspyc/serve.h>
#include <dspyc/optimize.h>
#include <dspyc/vec.h>
#include <dspyc/jobs.h>
#include <dspyc/retrieve.h>
#include <dspyc/tokens.h>
#include <dspyc/price.h>
#include <dspyc/select.h>

#endif
