function ops = ks2_default_ops(input_dir, work, name)
% configFile384.m (Kilosort2 v2.0) values, plus the file names of recording <name> in input_dir
% (proc file in work). Shared by the ks2_* drivers.
ops.fbinary = fullfile(input_dir, [name '.bin']);
ops.fproc = fullfile(work, [name '_proc.dat']);
ops.chanMap = fullfile(input_dir, [name '_chanMap.mat']);
cm = load(ops.chanMap);
ops.NchanTOT = double(cm.NchanTOT);
ops.fs = 30000; ops.fshigh = 150; ops.minfr_goodchannels = 0.1; ops.Th = [10 4]; ops.lam = 10;
ops.AUCsplit = 0.9; ops.minFR = 1/50; ops.momentum = [20 400]; ops.sigmaMask = 30; ops.ThPre = 8;
ops.spkTh = -6; ops.reorder = 1; ops.nskip = 25; ops.GPU = 1; ops.nfilt_factor = 4;
ops.ntbuff = 64; ops.NT = 64*1024 + ops.ntbuff; ops.whiteningRange = 32; ops.nSkipCov = 25;
ops.scaleproc = 200; ops.nPCs = 3; ops.useRAM = 0; ops.trange = [0 Inf];
end
