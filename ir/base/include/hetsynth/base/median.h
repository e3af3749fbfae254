// The median of timing samples: what profiling, calibration and the network profile take over
// their repeats.
#pragma once

#include <vector>

namespace hetsynth {

// The middle sample (the mean of the two middle ones for an even count); 0 for none.
double Median(std::vector<double> v);

}  // namespace hetsynth
