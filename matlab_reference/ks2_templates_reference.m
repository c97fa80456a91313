function ks2_templates_reference(ks_path, out_dir)
% getMeUtU, getMeWtW2, triageTemplates2 and memorizeW (Kilosort2 v2.0) on seeded inputs built
% so that every branch acts: templates below the rate floor, and a near-duplicate pair.
%   octave --no-gui --eval "ks2_templates_reference('/path/to/Kilosort-v2.0', 'data')"
here = fileparts(mfilename('fullpath'));
addpath(fullfile(here, 'shims'));
addpath(fullfile(ks_path, 'mainLoop'), fullfile(ks_path, 'utils'));
rng('default'); rng(11);
nt0 = 61; Nchan = 24; Nfilt = 12; Nrank = 3; NchanNear = 8;
W = single(randn(nt0, Nfilt, Nrank)); W = W ./ sqrt(sum(W.^2, 1));
U = single(randn(Nchan, Nfilt, Nrank)); U = U ./ sqrt(sum(U.^2, 1));
W(:, 5, :) = W(:, 4, :) + 0.01 * single(randn(nt0, 1, Nrank));   % 5 duplicates 4
U(:, 5, :) = U(:, 4, :);
mu = single(10 + 20 * rand(Nfilt, 1)); mu(5) = mu(4) + 3;        % amplitudes within 4*sqrt(10)
nsp = double(50 * rand(Nfilt, 1)); nsp([2 9]) = 0.01; nsp(5) = nsp(4) / 2;  % 2, 9 below minFR
dWU = single(randn(nt0, Nchan, Nfilt));
ops.minFR = 1/50; ops.NT = 65600; ops.fs = 30000;
[cc, iList2] = getMeWtW2(W, U, 5);
[W1, U1, dWU1, mu1, nsp1, ndrop1] = triageTemplates2(ops, [], [], W, U, dWU, mu, nsp, [0 0]);
iW = int32(randi(Nchan, Nfilt, 1));
iC = int32(zeros(NchanNear, Nchan)); mask = single(rand(NchanNear, Nchan));
for j = 1:Nchan, iC(:, j) = mod(j - 1 + (0:NchanNear-1)', Nchan) + 1; end
[UtU, maskU, iList] = getMeUtU(iW, iC, mask, 6, Nchan);
rez = struct();
rez = memorizeW(rez, W1, dWU1, U1, mu1);
Wraw = rez.Wraw;
save('-v7', fullfile(out_dir, 'ks2_templates.mat'), 'W', 'U', 'mu', 'nsp', 'dWU', 'cc', 'iList2', ...
     'W1', 'U1', 'dWU1', 'mu1', 'nsp1', 'ndrop1', 'iW', 'iC', 'mask', 'UtU', 'maskU', 'iList', 'Wraw');
end
