function ks25_align_reference(ks_path, out_dir)
% align_block2 (Kilosort 2.5.2, drift estimation from per-batch depth x amplitude histograms) on
% seeded histograms of a drifting probe: rigid (nblocks = 1) and non-rigid (nblocks = 5).
%   octave --no-gui --eval "ks25_align_reference('/path/to/Kilosort-v2.5.2', 'data')"
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'));
addpath(fullfile(ks_path, 'preProcess'), fullfile(ks_path, 'utils'));
rand('seed', 7); randn('seed', 7);
nybins = 80; namp = 10; nbatch = 40; dd = 5;
ysamp = dd * (1:nybins)' - dd / 2;                  % bin centres (um), as datashift2 sets them
drift = 3.5 * sin(2 * pi * (0:nbatch-1)' / 25) + 0.02 * (0:nbatch-1)' .* linspace(0, 1, nbatch)';
depths = [60 130 170 240 300 345];                  % units (um) and their amplitude bins
amps = [3 7 5 9 2 6];
F = zeros(nybins, namp, nbatch);
for k = 1:nbatch
  for u = 1:numel(depths)
    y = depths(u) + dd * drift(k) * (1 + 0.3 * (depths(u) > 200));   % deeper units move more
    F(:, amps(u), k) = F(:, amps(u), k) + 40 * exp(-(ysamp - y).^2 / (2 * 6^2));
  end
  F(:, :, k) = F(:, :, k) + 2 * rand(nybins, namp);
end
F = round(F);
[imin1, yblk1, F01, F0m1] = align_block2(F, ysamp, 1);
[imin5, yblk5, F05, F0m5] = align_block2(F, ysamp, 5);
save('-v7', fullfile(out_dir, 'ks25_align.mat'), 'F', 'ysamp', 'drift', 'imin1', 'yblk1', ...
     'F01', 'F0m1', 'imin5', 'yblk5', 'F05', 'F0m5');
end
