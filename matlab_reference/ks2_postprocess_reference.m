function ks2_postprocess_reference(ks_path, version, in_mat, out_dir, tag)
% The original post-processing on a saved rez, step by step (mexSVDsmall2 and mexWtW2 answered by
% pykilosort's kernels through mexbridge/):
%   v2.0:   find_merges(rez,1), splitAllClusters(rez,1), splitAllClusters(rez,0), set_cutoff, rezToPhy
%   v2.5.2: find_merges(rez,1), splitAllClusters(rez,1), set_cutoff, get_good_units, rezToPhy
% Writes <out_dir>/<prefix>_post_<tag>.mat (prefix ks2 or ks25) with each step's outputs, and the
% phy folder <out_dir>/<prefix>_phy_<tag>/ (each .npy as a .mat: shims/writeNPY.m). Also ccg on
% pairs of spike trains of the input (the same for both versions), and splitAllClusters(rez, 0)
% right after the merges (split_mean_only: the amplitude split has clusters to split there).
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'), fullfile(here, 'mexbridge'));
addpath(fullfile(ks_path, 'postProcess'), fullfile(ks_path, 'mainLoop'), fullfile(ks_path, 'utils'));
set(0, 'defaultfigurevisible', 'off');
s = load(in_mat); rez = s.rez;
if ~isfield(rez, 'st2'), rez.st2 = rez.st3; end
prefix = 'ks2'; if strcmp(version, '2.5.2'), prefix = 'ks25'; end
out = struct();
out.ccg = ccg_pairs(rez);
rez = find_merges(rez, 1);
out.merges_st3 = rez.st3;
out.split_mean_only = split_fields(splitAllClusters(rez, 0));  % the amplitude split on its own
rez = splitAllClusters(rez, 1);
out.split_svd = split_fields(rez);
if strcmp(version, '2.0')
  rez = splitAllClusters(rez, 0);
  out.split_amplitude = split_fields(rez);
end
rez = set_cutoff(rez);
out.cutoff = struct('st3', rez.st3, 'good', rez.good, 'est_contam_rate', rez.est_contam_rate, ...
                    'Ths', rez.Ths(:));
if strcmp(version, '2.5.2')
  rez.good = get_good_units(rez);
  out.good_units = rez.good;
end
phy = fullfile(out_dir, sprintf('%s_phy_%s', prefix, tag));
if exist(phy, 'dir'), rmdir(phy, 's'); end
mkdir(phy);
rezToPhy(rez, phy);
save('-v7', fullfile(out_dir, sprintf('%s_post_%s.mat', prefix, tag)), '-struct', 'out');
fprintf('%s post-processing of %s: %d spikes, %d templates, %d good\n', version, tag, ...
        size(rez.st3, 1), size(rez.W, 2), sum(rez.good > 0));
end

function f = split_fields(rez)
f = struct('st3', rez.st3, 'W', rez.W, 'U', rez.U, 'mu', rez.mu, 'dWU', rez.dWU, ...
           'simScore', rez.simScore, 'iNeigh', rez.iNeigh, 'iNeighPC', rez.iNeighPC, ...
           'isplit', rez.isplit);
end

function c = ccg_pairs(rez)
% ccg of the first templates' trains, each with itself and with the next one
k = unique(rez.st3(:, 2));
k = k(1:min(6, numel(k)));
c = struct('pairs', [], 'K', [], 'Qi', [], 'Q00', [], 'Q01', [], 'Ri', []);
for a = 1:numel(k)
  for b = [a, min(a + 1, numel(k))]
    s1 = rez.st3(rez.st3(:, 2) == k(a), 1) / rez.ops.fs;
    s2 = rez.st3(rez.st3(:, 2) == k(b), 1) / rez.ops.fs;
    [K, Qi, Q00, Q01, Ri] = ccg(s1, s2, 500, 1/1000);
    c.pairs(end + 1, :) = [k(a), k(b)];
    c.K(:, end + 1) = K; c.Qi(:, end + 1) = Qi(:); c.Ri(:, end + 1) = Ri(:);
    c.Q00(end + 1) = Q00; c.Q01(end + 1) = Q01;
  end
end
end
