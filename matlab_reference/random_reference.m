function random_reference(out_dir)
% Octave's random stream after rng('default'); rng(seed): rand and randperm, for pykilosort's
% OctaveStream. No Kilosort code is needed.
%   octave --no-gui --eval "random_reference('data')"
seeds = [1 2 7 42];
rand_2x3 = zeros(2, 3, numel(seeds));
perm_10 = zeros(numel(seeds), 10);
perm_100_5 = zeros(numel(seeds), 5);
perm_1000_64 = zeros(numel(seeds), 64);
for i = 1:numel(seeds)
    rng('default'); rng(seeds(i)); rand_2x3(:, :, i) = rand(2, 3);
    rng('default'); rng(seeds(i)); perm_10(i, :) = randperm(10);
    rng('default'); rng(seeds(i)); perm_100_5(i, :) = randperm(100, 5);
    rng('default'); rng(seeds(i)); perm_1000_64(i, :) = randperm(1000, 64);
end
% two draws in a row share one stream (as initializeWdata2 after other draws would)
rng('default'); rng(1); a = rand(1, 3); b = randperm(20, 4); sequence = [a b];
save('-v7', fullfile(out_dir, 'octave_random.mat'), 'seeds', 'rand_2x3', 'perm_10', ...
     'perm_100_5', 'perm_1000_64', 'sequence');
end
